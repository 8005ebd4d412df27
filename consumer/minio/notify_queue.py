"""MinIO's own queue for the project's notify target, read from its metrics (v2).

MinIO sends bucket events to Kafka from an on-disk queue (``queue_dir``) that a loop
lists every 3 s: a backlog there is invisible in Kafka's lag, and a queue past its
``queue_limit`` drops events (MinIO counts them as failed). Its Prometheus endpoint
``/minio/v2/metrics/cluster`` tells, per target id:

* ``minio_notify_target_queue_length`` — events waiting in the store;
* ``minio_notify_target_failed_events`` — events the target refused (a full queue);
* ``minio_notify_target_total_events`` — events handed to the target;

and, per server, ``minio_node_process_starttime_seconds`` (a restart moves it). MinIO
caches the answer for 10 s.

Authentication: a bearer JWT (HS512, claims ``exp``, ``sub`` = access key, ``iss`` =
"prometheus"), signed with that key's secret — what ``mc admin prometheus generate``
prints; the key's policy needs the action ``admin:Prometheus``. Or none, where the server
runs with ``MINIO_PROMETHEUS_AUTH_TYPE=public`` (MINIO_METRICS_AUTH=public here).

``parse_notify_queue`` and ``prometheus_token`` are pure; ``NotifyQueueReader`` is the
thin HTTP edge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Final

import urllib3
from prometheus_client.parser import text_string_to_metric_families

from consumer.errors import ConnectionFailed, ConsumerError
from consumer.minio.connect import minio_http_pool
from consumer.settings import Settings

METRICS_PATH: Final = "/minio/v2/metrics/cluster"
TOKEN_TTL_S: Final = 3600
QUEUE_LENGTH: Final = "minio_notify_target_queue_length"
FAILED_EVENTS: Final = "minio_notify_target_failed_events"
TOTAL_EVENTS: Final = "minio_notify_target_total_events"
START_TIME: Final = "minio_node_process_starttime_seconds"
_WANTED: Final = (QUEUE_LENGTH, FAILED_EVENTS, TOTAL_EVENTS)


class MetricsUnreadable(ConsumerError):
    """MinIO's metrics answered, but without what we read (or refused us)."""


# --- pure --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotifyQueue:
    """One reading of MinIO's queue for a target, summed over its servers."""

    target_id: str
    queue_length: int
    failed_events: int
    total_events: int
    # The newest process start time of MinIO's servers (epoch seconds): a restart of any
    # of them moves it. None when the endpoint does not tell.
    started_at_s: float | None
    read_at_s: float  # this host's clock when the answer came

    @property
    def delivered_events(self) -> int:
        """Events sent on to Kafka: handed to the target, minus refused and still waiting."""
        return max(0, self.total_events - self.failed_events - self.queue_length)

    def fields(self) -> dict[str, object]:
        """The /status document's ``minio_queue`` part."""
        return {
            "target": self.target_id,
            "queue_length": self.queue_length,
            "failed_events": self.failed_events,
            "total_events": self.total_events,
            "started_at_s": self.started_at_s,
        }


def parse_notify_queue(text: str, target_id: str, *, read_at_s: float) -> NotifyQueue:
    """The queue of ``target_id`` in a Prometheus text answer. Pure.

    Raises MetricsUnreadable when the answer has no series of that target (a target id
    MinIO does not know, or a build without these metrics)."""
    sums = dict.fromkeys(_WANTED, 0.0)
    seen: set[str] = set()
    start_times: list[float] = []
    # By family: the parser names a counter's samples "<family>_total".
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == START_TIME:
                start_times.append(float(sample.value))
            elif family.name in sums and _is_target(sample.labels, target_id):
                sums[family.name] += float(sample.value)
                seen.add(family.name)
    missing = [name for name in _WANTED if name not in seen]
    if missing:
        raise MetricsUnreadable(
            f"MinIO's metrics have no {', '.join(missing)} for notify target {target_id!r}"
            " (is the target id that of MINIO_NOTIFY_KAFKA_*_<ID> on the server?)"
        )
    return NotifyQueue(
        target_id=target_id,
        queue_length=int(sums[QUEUE_LENGTH]),
        failed_events=int(sums[FAILED_EVENTS]),
        total_events=int(sums[TOTAL_EVENTS]),
        started_at_s=max(start_times) if start_times else None,
        read_at_s=read_at_s,
    )


def restarted(previous: NotifyQueue, current: NotifyQueue) -> bool:
    """Whether MinIO restarted between two readings: its start time moved (or, where it
    does not tell one, its counters went back). Pure."""
    if previous.started_at_s is not None and current.started_at_s is not None:
        return current.started_at_s > previous.started_at_s
    return current.total_events < previous.total_events


def delivery_rate(previous: NotifyQueue | None, current: NotifyQueue) -> float | None:
    """Events MinIO sent on to Kafka per second between two readings; None without a
    comparable earlier reading (none, or MinIO restarted in between). Pure."""
    if previous is None or restarted(previous, current):
        return None
    elapsed_s = current.read_at_s - previous.read_at_s
    if elapsed_s <= 0:
        return None
    sent = current.delivered_events - previous.delivered_events
    return round(max(0, sent) / elapsed_s, 2)


def same_reading(previous: NotifyQueue, current: NotifyQueue) -> bool:
    """Whether MinIO's queue did not move between two readings: as many events waiting,
    none handed to the target, none refused, and no restart in between. Pure."""
    return (
        current.queue_length == previous.queue_length
        and current.total_events == previous.total_events
        and current.failed_events == previous.failed_events
        and not restarted(previous, current)
    )


def unchanged_since(
    since: NotifyQueue | None, previous: NotifyQueue | None, current: NotifyQueue
) -> NotifyQueue:
    """The first of the readings equal to ``current``, given ``since`` (that of the
    readings up to ``previous``): ``current`` itself when it differs from ``previous``.
    Pure."""
    if since is None or previous is None or not same_reading(previous, current):
        return current
    return since


def holds_unsent(queue: NotifyQueue, unchanged_s: float, after_s: float) -> bool:
    """Whether MinIO holds entries it does not send: its queue is not empty and has not
    moved for ``after_s`` (``unchanged_s``: how long it has not). Pure.

    This MinIO build leaves an entry in its queue for good when its process was killed
    while writing it: an empty file is taken for one already sent (its send loop returns
    without removing it), and a truncated one fails to decode on every round; either way
    the target's queue length stays above 0 with nothing delivered."""
    return queue.queue_length > 0 and unchanged_s >= after_s


def queue_too_long(queue: NotifyQueue, limit: int) -> str | None:
    """Why the report is degraded by MinIO's queue (None: it is not), naming the number."""
    if queue.queue_length <= limit:
        return None
    return (
        f"MinIO holds {queue.queue_length} undelivered events for notify target"
        f" {queue.target_id} (MINIO_QUEUE_DEGRADED_LENGTH {limit})"
    )


def _is_target(labels: dict[str, str], target_id: str) -> bool:
    # MinIO labels the series with target_id (the configured id, e.g. "VOXPERSONA"); the
    # ARN form "<id>:kafka" is accepted too.
    found = labels.get("target_id", "")
    return found == target_id or found.split(":", 1)[0] == target_id


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def prometheus_token(access_key: str, secret_key: str, *, now_s: float) -> str:
    """The bearer token MinIO's metrics accept for ``access_key``: a JWT signed HS512 with
    its secret, issuer "prometheus", valid TOKEN_TTL_S from ``now_s``. Pure."""
    header = {"alg": "HS512", "typ": "JWT"}
    claims = {"exp": int(now_s) + TOKEN_TTL_S, "sub": access_key, "iss": "prometheus"}
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret_key.encode(), signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{_b64url(signature)}"


def metrics_url(settings: Settings) -> str:
    scheme = "https" if settings.minio_use_ssl else "http"
    return f"{scheme}://{settings.minio_endpoint}{METRICS_PATH}"


# --- I/O ---------------------------------------------------------------------------------


class NotifyQueueReader:
    """Reads the target's queue over one urllib3 pool (MinIO's TLS settings apply), in a
    thread of its own so a hung MinIO never holds the event loop."""

    def __init__(self, settings: Settings, target_id: str, *, timeout_s: float = 5.0) -> None:
        self._settings = settings
        self._target_id = target_id
        self._timeout_s = timeout_s
        self._pool: urllib3.PoolManager | None = None

    @property
    def target_id(self) -> str:
        return self._target_id

    async def read(self) -> NotifyQueue:
        """The queue as MinIO tells it now. Raises ConnectionFailed (no answer),
        MetricsUnreadable (refused, or no series of the target)."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> NotifyQueue:
        if self._pool is None:
            self._pool = minio_http_pool(self._settings, maxsize=1)
        headers: dict[str, str] = {}
        if self._settings.minio_metrics_auth == "jwt":
            token = prometheus_token(
                self._settings.minio_access_key,
                self._settings.minio_secret_key.get_secret_value(),
                now_s=time.time(),
            )
            headers["Authorization"] = f"Bearer {token}"
        url = metrics_url(self._settings)
        try:
            answer = self._pool.request(
                "GET", url, headers=headers, timeout=urllib3.Timeout(total=self._timeout_s)
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ConnectionFailed(f"MinIO's metrics at {url} did not answer: {exc}") from exc
        if answer.status != 200:
            raise MetricsUnreadable(_refusal(answer.status, url, self._settings))
        return parse_notify_queue(
            answer.data.decode("utf-8", "replace"), self._target_id, read_at_s=time.time()
        )


def _refusal(status: int, url: str, settings: Settings) -> str:
    if status in (401, 403):
        if settings.minio_metrics_auth == "public":
            return (
                f"MinIO's metrics at {url} want a token (HTTP {status}): the server is not"
                " in public mode; set MINIO_METRICS_AUTH=jwt"
            )
        return (
            f"MinIO refused its metrics to MINIO_ACCESS_KEY (HTTP {status}):"
            " the key's policy needs the action admin:Prometheus (setup --identities grants it)"
        )
    return f"MinIO's metrics at {url} answered HTTP {status}"
