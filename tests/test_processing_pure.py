"""The processing pieces without servers: rules, job selection, the ranged reader, the
probe's description of parsed files, the transcription client's pure helpers."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from consumer.errors import ConfigError, IndexUnavailable, ProcessingFailed, StopRequested
from consumer.events import EventKind, ObjectEvent
from consumer.index import IndexStore
from consumer.index.records import Lease
from consumer.processing.probe import describe
from consumer.processing.rules import Rule, load_rules, select_jobs
from consumer.processing.source import RangeReader
from consumer.processing.transcribe import create, describe_answer, endpoint_url
from consumer.processing.worker import (
    ProcessorWorker,
    _outcomes,
    lease_check_interval_s,
    new_owner_id,
)
from consumer.service import Role, processor_dead_letters_malformed
from consumer.settings import Settings

T = datetime(2026, 1, 1, tzinfo=UTC)


def created(key: str, *, bucket: str = "audio", seq: int = 1, **fields: object) -> ObjectEvent:
    values: dict[str, object] = {
        "bucket": bucket,
        "key": key,
        "version_id": "",
        "event_name": "s3:ObjectCreated:Put",
        "kind": EventKind.CREATED,
        "event_time": T,
        "sequencer": f"{seq:032X}",
        "size": 10,
        "etag": f"e{seq}",
        "content_type": "application/octet-stream",
    }
    values.update(fields)
    return ObjectEvent(**values)  # type: ignore[arg-type]


AUDIO_RULE = Rule(bucket="audio")


class TestRules:
    @pytest.mark.parametrize(
        ("key", "content_type", "covered"),
        [
            ("user_1/a.ogg", "application/octet-stream", True),
            ("user_1/A.WAV", None, True),
            ("user_1/blob", "audio/mpeg", True),
            ("user_1/blob", "audio/ogg; codecs=opus", True),
            ("user_1/blob", "application/ogg", True),
            ("user_1/notes.txt", "text/plain", False),
        ],
    )
    def test_suffix_or_content_type_says_audio(
        self, key: str, content_type: str | None, covered: bool
    ) -> None:
        assert AUDIO_RULE.covers(created(key, content_type=content_type)) is covered

    def test_bucket_and_prefix_must_match(self) -> None:
        rule = Rule(bucket="audio", prefix="user_")
        assert not rule.covers(created("a.ogg", bucket="other"))
        assert not rule.covers(created("tmp/a.ogg"))
        assert rule.covers(created("user_2/a.ogg"))

    def test_a_rule_without_filters_covers_everything_under_its_prefix(self) -> None:
        assert Rule(bucket="audio", suffixes=(), content_types=()).covers(created("x.bin"))

    def test_rules_file(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.json"
        path.write_text('{"rules": [{"bucket": "b", "processors": ["audio-probe"]}]}')
        settings = Settings(_env_file=None, PROCESSING_RULES_FILE=path)  # type: ignore[call-arg]
        (rule,) = load_rules(settings)
        assert (rule.bucket, rule.processors) == ("b", ("audio-probe",))

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("{", "not JSON"),
            ('{"rules": []}', "rules"),
            ('{"rules": [{"bucket": "b", "colour": "red"}]}', "colour"),
        ],
    )
    def test_bad_rules_file_is_a_config_error(
        self, tmp_path: Path, text: str, message: str
    ) -> None:
        path = tmp_path / "rules.json"
        path.write_text(text)
        settings = Settings(_env_file=None, PROCESSING_RULES_FILE=path)  # type: ignore[call-arg]
        with pytest.raises(ConfigError, match=message):
            load_rules(settings)

    def test_default_rule_is_the_audio_bucket(self) -> None:
        settings = Settings(_env_file=None, MINIO_AUDIO_BUCKET_NAME="voice")  # type: ignore[call-arg]
        (rule,) = load_rules(settings)
        assert rule.bucket == "voice"
        assert rule.processors == ("audio-probe", "transcribe")


class TestSelectJobs:
    def select(self, *events: ObjectEvent, available: tuple[str, ...] = ("audio-probe",)) -> list:  # type: ignore[type-arg]
        return select_jobs(
            [(e, i) for i, e in enumerate(events)],
            [AUDIO_RULE],
            available=frozenset(available),
            results_bucket="results",
        )

    def test_one_job_per_available_processor(self) -> None:
        planned = self.select(created("a.ogg"), available=("audio-probe", "transcribe"))
        assert sorted(p.job.request.processor for p in planned) == ["audio-probe", "transcribe"]
        assert self.select(created("a.ogg"), available=()) == []

    def test_only_created_events_outside_the_results_bucket(self) -> None:
        tagging = created(
            "a.ogg", kind=EventKind.METADATA_CHANGED, event_name="s3:ObjectCreated:PutTagging"
        )
        removal = created("a.ogg", kind=EventKind.REMOVED, event_name="s3:ObjectRemoved:Delete")
        result = created("a.ogg", bucket="results")
        assert self.select(tagging, removal, result) == []

    def test_an_overwrite_in_one_batch_keeps_the_newest_content(self) -> None:
        (planned,) = self.select(created("a.ogg", seq=2), created("a.ogg", seq=1))
        assert planned.job.request.etag == "e2"
        assert planned.message_index == 0


class TestRangeReader:
    def test_reads_and_seeks_like_a_file_with_bounded_cache(self) -> None:
        data = bytes(range(256)) * 40  # 10 KiB
        calls: list[tuple[int, int]] = []

        def fetch(offset: int, length: int) -> bytes:
            calls.append((offset, length))
            return data[offset : offset + length]

        reader = RangeReader(fetch, len(data), block_size=1024, cached_blocks=2)
        buffered = io.BufferedReader(reader, buffer_size=512)
        assert buffered.read(10) == data[:10]
        buffered.seek(-100, io.SEEK_END)
        assert buffered.read() == data[-100:]
        buffered.seek(5000)
        assert buffered.read(3000) == data[5000:8000]
        assert buffered.read(0) == b""
        assert len(reader._blocks) <= 2
        assert reader.bytes_fetched < 2 * len(data)
        assert all(length <= 1024 for _, length in calls)


class TestDescribe:
    def test_bitrate_falls_back_to_size_over_duration(self) -> None:
        info = SimpleNamespace(length=2.0, channels=1, sample_rate=None, bitrate=0)
        facts = describe("OggOpus", info, size=20_000)
        assert (facts["codec"], facts["sample_rate"], facts["bitrate"]) == ("opus", 48_000, 80_000)

    def test_mp4_codec_names(self) -> None:
        info = SimpleNamespace(length=1.0, channels=2, sample_rate=44_100, bitrate=1, codec="alac")
        assert describe("MP4", info, size=1)["codec"] == "alac"

    def test_no_audio_stream_is_a_permanent_failure(self) -> None:
        with pytest.raises(ProcessingFailed, match="without an audio stream"):
            describe("WAVE", SimpleNamespace(length=0.0, channels=1), size=44)


class TestTranscribeHelpers:
    @pytest.mark.parametrize("base", ["http://h/v1", "http://h/v1/", "http://h", "http://h/"])
    def test_endpoint_url(self, base: str) -> None:
        assert endpoint_url(base) == "http://h/v1/audio/transcriptions"

    def test_describe_answer(self) -> None:
        assert describe_answer(400, '{"error": {"message": "bad  file"}}') == "bad file"
        assert describe_answer(500, "<html>\\n oops </html>") == "<html>\\n oops </html>"
        assert describe_answer(502, "") == "(empty body)"

    def test_off_until_configured(self) -> None:
        assert create(Settings(_env_file=None)) is None  # type: ignore[call-arg]


class TestLeasesAndOutcomes:
    def test_owner_ids_name_the_host_and_pid_and_differ_per_start(self) -> None:
        first, second = new_owner_id(), new_owner_id()
        assert first != second
        assert first.split(":")[-2] == str(os.getpid())

    @pytest.mark.parametrize(("lease_s", "interval_s"), [(2, 0.5), (8, 2.0), (120, 5.0)])
    def test_held_jobs_are_asked_about_within_a_quarter_lease(
        self, lease_s: float, interval_s: float
    ) -> None:
        assert lease_check_interval_s(lease_s) == interval_s

    def test_outcomes_raise_a_real_failure_before_a_stop(self) -> None:
        boom = RuntimeError("boom")
        with pytest.raises(RuntimeError):
            _outcomes([None, StopRequested("stop"), boom])
        with pytest.raises(StopRequested):
            _outcomes([None, StopRequested("stop")])
        assert _outcomes([None, None]) == [None, None]


@pytest.mark.parametrize(
    ("role", "setting", "expected"),
    [
        (Role.PROCESSOR, None, True),
        (Role.ALL, None, False),
        (Role.PROCESSOR, False, False),
        (Role.ALL, True, True),
    ],
)
def test_who_dead_letters_malformed_messages(
    role: Role, setting: bool | None, expected: bool
) -> None:
    settings = Settings(_env_file=None, PROCESSING_DEAD_LETTER_MALFORMED=setting)  # type: ignore[call-arg]
    assert processor_dead_letters_malformed(settings, role) is expected


class _RenewalCutOff:
    """An index whose lease renewal, once under way, ends with IndexUnavailable when it is
    cancelled: asyncpg's can, when its cancel request cannot reach a server that is down."""

    def __init__(self) -> None:
        self.renewing = asyncio.Event()
        self.renewals = 0

    async def renew_leases(self, lease: Lease) -> int:
        if lease.duration_s == 0:  # a release: not expected here
            return 0
        self.renewals += 1
        self.renewing.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise IndexUnavailable("PostgreSQL index unavailable: cancel refused") from None
        return 1


async def test_a_lease_renewal_cut_off_at_the_end_of_the_batch_lets_the_batch_end() -> None:
    # The renewer is cancelled when the batch's jobs ended; if the renewal in flight turns
    # that cancellation into IndexUnavailable, the renewer must still stop, not take it
    # for a failed round and renew on while the batch waits for it forever.
    store = _RenewalCutOff()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    worker = ProcessorWorker(settings, cast(IndexStore, store), {}, rules=[])
    worker.lease = Lease(worker.lease.owner, 0.04)  # a renewal every 10 ms

    async def batch() -> None:
        async with worker._renewing_leases():
            await store.renewing.wait()

    running = asyncio.ensure_future(batch())
    done, _ = await asyncio.wait({running}, timeout=5)
    assert done, "the batch waited for its cut-off lease renewal forever"
    running.result()
    assert store.renewals == 1
