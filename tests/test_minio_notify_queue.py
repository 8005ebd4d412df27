"""MinIO's notify-target queue from its metrics: the parser, the bearer token, the rate
and the degraded reason (pure; the live endpoint is read in
tests/integration/test_minio_notify_queue.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from consumer.cli.output import minio_queue_rows
from consumer.minio.notify_queue import (
    MetricsUnreadable,
    NotifyQueue,
    delivery_rate,
    holds_unsent,
    parse_notify_queue,
    prometheus_token,
    queue_too_long,
    restarted,
    same_reading,
    unchanged_since,
)


def _series(name: str, kind: str, *samples: tuple[str, str, int]) -> str:
    """One metric family in Prometheus text, MinIO's labels: (server, target, value)."""
    lines = [f"# HELP {name} as MinIO describes it", f"# TYPE {name} {kind}"]
    for server, target, value in samples:
        labels = f'server="127.0.0.1:{server}",target_id="{target}",target_name="kafka"'
        lines.append(f"{name}{{{labels}}} {value}")
    return "\n".join(lines)


# The shape of the pinned MinIO's /minio/v2/metrics/cluster answer (abridged; two
# servers, one other target whose numbers must not count).
ANSWER = "\n".join(
    [
        "# TYPE minio_node_process_starttime_seconds gauge",
        'minio_node_process_starttime_seconds{server="127.0.0.1:9000"} 1.765000000e+09',
        'minio_node_process_starttime_seconds{server="127.0.0.1:9001"} 1.765000500e+09',
        _series(
            "minio_notify_target_failed_events",
            "counter",
            ("9000", "VOXPERSONA", 7),
            ("9001", "VOXPERSONA", 1),
            ("9000", "OTHER", 1000),
        ),
        _series(
            "minio_notify_target_queue_length",
            "gauge",
            ("9000", "VOXPERSONA", 40),
            ("9001", "VOXPERSONA", 2),
        ),
        _series(
            "minio_notify_target_total_events",
            "counter",
            ("9000", "VOXPERSONA", 500),
            ("9001", "VOXPERSONA", 100),
        ),
    ]
)


def _queue(**fields: object) -> NotifyQueue:
    values: dict[str, object] = {
        "target_id": "VOXPERSONA",
        "queue_length": 0,
        "failed_events": 0,
        "total_events": 0,
        "started_at_s": 1000.0,
        "read_at_s": 0.0,
    }
    values.update(fields)
    return NotifyQueue(**values)  # type: ignore[arg-type]


class TestParse:
    def test_sums_the_targets_series_over_servers_and_ignores_other_targets(self) -> None:
        queue = parse_notify_queue(ANSWER, "VOXPERSONA", read_at_s=5.0)
        assert queue == NotifyQueue("VOXPERSONA", 42, 8, 600, 1.7650005e9, 5.0)
        assert queue.delivered_events == 600 - 8 - 42

    def test_an_unknown_target_is_a_clear_error(self) -> None:
        with pytest.raises(MetricsUnreadable, match="for notify target 'NOPE'"):
            parse_notify_queue(ANSWER, "NOPE", read_at_s=0.0)

    def test_without_a_start_time_the_reading_says_none(self) -> None:
        text = "\n".join(line for line in ANSWER.splitlines() if "starttime" not in line)
        assert parse_notify_queue(text, "VOXPERSONA", read_at_s=0).started_at_s is None


class TestToken:
    def test_is_a_jwt_minio_accepts_hs512_issuer_prometheus_subject_the_key(self) -> None:
        token = prometheus_token("reader", "s3cr3t-key", now_s=1000.4)
        header, claims, signature = token.split(".")

        def decoded(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        assert json.loads(decoded(header)) == {"alg": "HS512", "typ": "JWT"}
        assert json.loads(decoded(claims)) == {"exp": 4600, "sub": "reader", "iss": "prometheus"}
        expected = hmac.new(b"s3cr3t-key", f"{header}.{claims}".encode(), hashlib.sha512)
        assert decoded(signature) == expected.digest()
        assert "=" not in token


class TestRestartAndRate:
    def test_a_moved_start_time_is_a_restart(self) -> None:
        assert restarted(_queue(started_at_s=1000.0), _queue(started_at_s=1060.0))
        assert not restarted(_queue(total_events=5), _queue(total_events=9))

    def test_without_start_times_counters_going_back_are_a_restart(self) -> None:
        before = _queue(started_at_s=None, total_events=50)
        assert restarted(before, _queue(started_at_s=None, total_events=3))

    def test_rate_counts_events_sent_on_per_second(self) -> None:
        before = _queue(total_events=100, queue_length=50, read_at_s=0.0)
        after = _queue(total_events=300, queue_length=50, failed_events=20, read_at_s=10.0)
        assert delivery_rate(before, after) == 18.0  # (300-20-50 - (100-0-50)) / 10 s

    def test_no_rate_without_a_comparable_earlier_reading(self) -> None:
        assert delivery_rate(None, _queue()) is None
        assert delivery_rate(_queue(started_at_s=1.0), _queue(started_at_s=2.0)) is None
        assert delivery_rate(_queue(read_at_s=5.0), _queue(read_at_s=5.0)) is None


class TestUnchanged:
    def test_a_queue_that_neither_sends_nor_takes_is_the_same_reading(self) -> None:
        held = _queue(queue_length=1, total_events=40, read_at_s=0.0)
        assert same_reading(held, _queue(queue_length=1, total_events=40, read_at_s=9.0))
        assert not same_reading(held, _queue(queue_length=1, total_events=41))  # took one
        assert not same_reading(held, _queue(queue_length=0, total_events=40))  # sent it
        assert not same_reading(held, _queue(queue_length=1, total_events=40, failed_events=1))
        restart = _queue(queue_length=1, total_events=40, started_at_s=2000.0)
        assert not same_reading(held, restart)

    def test_unchanged_since_the_first_equal_reading(self) -> None:
        readings = [
            _queue(queue_length=2, total_events=40, read_at_s=0.0),
            _queue(queue_length=1, total_events=40, read_at_s=10.0),
            _queue(queue_length=1, total_events=40, read_at_s=20.0),
            _queue(queue_length=1, total_events=40, read_at_s=35.0),
        ]
        since, previous = None, None
        firsts = []
        for current in readings:
            since = unchanged_since(since, previous, current)
            previous = current
            firsts.append(since.read_at_s)
        assert firsts == [0.0, 10.0, 10.0, 10.0]
        moved = _queue(queue_length=1, total_events=41, read_at_s=40.0)
        assert unchanged_since(since, previous, moved) is moved

    def test_holds_unsent_once_a_non_empty_queue_has_not_moved_for_long_enough(self) -> None:
        assert holds_unsent(_queue(queue_length=1), 30.0, 30.0)
        assert not holds_unsent(_queue(queue_length=1), 29.9, 30.0)
        assert not holds_unsent(_queue(queue_length=0), 300.0, 30.0)


class TestDegraded:
    def test_a_queue_longer_than_the_setting_names_the_number(self) -> None:
        assert queue_too_long(_queue(queue_length=1000), 1000) is None
        reason = queue_too_long(_queue(queue_length=1001), 1000)
        assert reason is not None
        assert "1001 undelivered events" in reason
        assert "VOXPERSONA" in reason

    def test_status_table_lines(self) -> None:
        fields = {**_queue(queue_length=12, failed_events=3, total_events=90).fields()}
        rows = dict(minio_queue_rows({**fields, "delivery_rate": 4.5, "degraded": "too long"}))
        assert rows["minio_queue"] == "12 events waiting (VOXPERSONA)"
        assert rows["minio_failed_events"] == "3"
        assert rows["minio_delivery_rate"] == "4.5 events/s"
        assert rows["degraded"] == "too long"
        assert "minio_queue_unchanged" not in rows
        stuck = dict(minio_queue_rows({**fields, "unchanged_s": 42.4}))
        assert stuck["minio_queue_unchanged"] == "42 s"
        empty = {**_queue(queue_length=0).fields(), "unchanged_s": 60.0}
        assert "minio_queue_unchanged" not in dict(minio_queue_rows(empty))
        assert minio_queue_rows(None) == []
        unknown = dict(minio_queue_rows({"target": None, "error": "refused"}))
        assert unknown == {"minio_queue": "unknown: refused"}
