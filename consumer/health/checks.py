"""The checks behind health: whether Kafka, the index and MinIO answer, the MinIO success
rate, the groups' lag and the DLQ's size, gathered into the report ``/status`` serves and
``python -m consumer status`` prints (``HealthReporter``).

``/healthz`` answers while the event loop runs. ``/readyz`` checks that Kafka, the index
and MinIO answer. ``/status`` is the seeds' health report: connection status, MinIO
success rate, average response time and operation count, plus the consumer groups' lag,
the DLQ's size and each role's counters. Both reuse their clients and their latest answer
for HEALTH_CACHE_S (``HealthReporter``), so probes and scrapers can ask often.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

import structlog
import urllib3
from minio import Minio
from urllib3.exceptions import HTTPError

from consumer.errors import ConnectionFailed, ConsumerError
from consumer.index import IndexStore
from consumer.kafka.lag import KafkaProbe
from consumer.minio import describe_minio_failure, minio_client, minio_http_pool
from consumer.minio.queue_watch import QueueWatch
from consumer.settings import Settings
from consumer.telemetry import OperationTotals, instruments, minio_operation

log = structlog.get_logger(__name__)
T = TypeVar("T")

CHECK_TIMEOUT_S: Final = 5.0
# /status calls the pipeline "degraded" above these: the index trails the bucket, or MinIO
# fails more than it should.
DEGRADED_LAG: Final = 1000
DEGRADED_SUCCESS_RATE: Final = 95.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"ok": self.ok, "latency_ms": self.latency_ms, "error": self.error}


async def run_check(
    name: str, probe: Callable[[], Awaitable[object]], timeout_s: float = CHECK_TIMEOUT_S
) -> Check:
    """``probe`` under a time limit; any failure is the check's error, never raised."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), timeout_s)
    except TimeoutError:
        error: str | None = f"no answer within {timeout_s:g} s"
    except Exception as exc:  # a check reports, it does not fail the server
        error = str(exc) or type(exc).__name__
    else:
        error = None
    return Check(name, error is None, round((time.perf_counter() - started) * 1000, 1), error)


def overall_status(checks: Mapping[str, Check], lag: int | None, success_rate: float) -> str:
    """healthy, degraded (lagging, or MinIO failing often) or unhealthy (a dependency is
    unreachable). Pure."""
    if not all(check.ok for check in checks.values()):
        return "unhealthy"
    if (lag is not None and lag > DEGRADED_LAG) or success_rate < DEGRADED_SUCCESS_RATE:
        return "degraded"
    return "healthy"


def status_report(
    checks: Mapping[str, Check],
    lags: Mapping[str, Mapping[int, int] | None],
    dlq_messages: int | None,
    totals: OperationTotals,
    workers: Mapping[str, Mapping[str, Any]],
    now: datetime,
    minio_queue: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The /status document; ``minio_queue``: MinIO's queue for the notify target
    (``queue_fields``), whose ``degraded`` reason, if any, makes a healthy report
    degraded. Pure."""
    indexer_lag = lags.get("indexer")
    total_lag = sum(indexer_lag.values()) if indexer_lag is not None else None
    status = overall_status(checks, total_lag, totals.success_rate)
    if status == "healthy" and any(stats.get("last_failure") for stats in workers.values()):
        # Every check answers, yet a role waits on a failing call (a full disk under the
        # index answers reads but takes no write): its workers entry says which.
        status = "degraded"
    if status == "healthy" and minio_queue and minio_queue.get("degraded"):
        status = "degraded"
    return {
        "status": status,
        "checked_at": now.isoformat(),
        "connection_status": "connected"
        if all(check.ok for check in checks.values())
        else "disconnected",
        "connections": {name: check.fields() for name, check in checks.items()},
        "success_rate": totals.success_rate,
        "average_response_time": totals.average_ms,
        "operations_total": totals.total,
        "operations_failed": totals.failed,
        "lag": {
            group: None
            if partitions is None
            else {"total": sum(partitions.values()), "partitions": dict(partitions)}
            for group, partitions in lags.items()
        },
        "dlq_messages": dlq_messages,
        "minio_queue": dict(minio_queue) if minio_queue is not None else None,
        "workers": {name: dict(stats) for name, stats in workers.items()},
    }


class Shared(Generic[T]):
    """The result of ``compute``, kept for ``ttl_s`` after it finished; callers that come
    while it runs wait for that run instead of starting another. A caller that goes away
    (a closed connection) does not cancel the run the others wait for."""

    def __init__(
        self,
        compute: Callable[[], Awaitable[T]],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self._ttl_s = ttl_s
        self._clock = clock
        self._latest: tuple[float, T] | None = None
        self._running: asyncio.Task[T] | None = None
        self.runs = 0  # how often ``compute`` ran (read by tests)

    async def get(self) -> T:
        if self._latest is not None and self._clock() - self._latest[0] < self._ttl_s:
            return self._latest[1]
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> T:
        self.runs += 1
        try:
            value = await self._compute()
        finally:
            self._running = None
        self._latest = (self._clock(), value)
        return value

    async def close(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running


@dataclass(frozen=True)
class _Observed:
    """What one /status round saw (the report adds this process's live counters)."""

    checks: dict[str, Check]
    lags: dict[str, dict[int, int] | None]
    dlq: int | None
    at: datetime
    minio_queue: dict[str, Any] | None = None


def health_minio_client(settings: Settings, timeout_s: float) -> Minio:
    """A MinIO client whose every request ends within ``timeout_s`` (connect and read
    together), so the thread a check runs it in never outlives the check. A little
    inside it: the request's own timeout, which names what hung, ends it first."""
    pool = minio_http_pool(settings, maxsize=1)
    pool.connection_pool_kw["timeout"] = urllib3.Timeout(total=0.9 * timeout_s)
    return minio_client(settings, pool)


class HealthReporter:
    """Runs the checks against this process's settings, index and MinIO client.

    Cheap to ask often: one Kafka probe (a group-less consumer and an admin client) is
    kept open across checks and made again only after it failed to start; the MinIO
    check runs in one thread of its own, whose request ends within the check's time
    limit; /readyz's and /status's results are kept ``cache_s`` (HEALTH_CACHE_S) seconds
    and requests arriving meanwhile share one round of checks. ``close`` releases it all.
    """

    def __init__(
        self,
        settings: Settings,
        store: IndexStore | None,
        *,
        minio: Minio | None = None,
        workers: Callable[[], Mapping[str, Mapping[str, Any]]] = dict,
        timeout_s: float = CHECK_TIMEOUT_S,
        cache_s: float | None = None,
        notify_target: Callable[[], str] | None = None,
    ) -> None:
        """``notify_target``: the notify target's id (from the notification file, which
        the caller reads); without it, or with MINIO_METRICS_INTERVAL_S=0, /status has no
        ``minio_queue``."""
        self._settings = settings
        self._store = store
        self._timeout_s = timeout_s
        self._minio = minio or health_minio_client(settings, timeout_s)
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-minio")
        self._probe: KafkaProbe | None = None
        self._probe_lock = asyncio.Lock()
        self.kafka_clients_made = 0  # probes started (read by tests)
        ttl = settings.health_cache_s if cache_s is None else cache_s
        self._ready = Shared(self.checks, ttl)
        self._observed = Shared(self._observe, ttl)
        self._queue = (
            QueueWatch(settings, notify_target, timeout_s)
            if notify_target is not None and settings.minio_metrics_interval_s
            else None
        )

    @property
    def rounds(self) -> int:
        """Rounds of checks run so far, /readyz's and /status's (read by tests)."""
        return self._ready.runs + self._observed.runs

    async def checks(self) -> dict[str, Check]:
        kafka, index, minio = await asyncio.gather(
            run_check("kafka", self._kafka, self._timeout_s),
            run_check("index", self._index, self._timeout_s),
            run_check("minio", self._minio_answers, self._timeout_s),
        )
        return {"kafka": kafka, "index": index, "minio": minio}

    async def ready(self) -> tuple[bool, dict[str, Check]]:
        checks = await self._ready.get()
        return all(check.ok for check in checks.values()), checks

    async def status(self) -> dict[str, Any]:
        """The report: the latest round of checks, lags and DLQ size (at most HEALTH_CACHE_S
        old) with this process's counters as they are now."""
        observed = await self._observed.get()
        return status_report(
            observed.checks,
            observed.lags,
            observed.dlq,
            instruments.minio_totals,
            self._workers(),
            observed.at,
            observed.minio_queue,
        )

    async def _observe(self) -> _Observed:
        """One probe answers the Kafka check, the lags and the DLQ size."""
        facts: dict[str, Any] = {"lags": {}, "dlq": None}
        kafka, index, minio, queue = await asyncio.gather(
            # Each Kafka request is bounded by the time limit; six of them at most here.
            run_check("kafka", lambda: self._kafka(facts), 6 * self._timeout_s),
            run_check("index", self._index, self._timeout_s),
            run_check("minio", self._minio_answers, self._timeout_s),
            self._queue_fields(),
        )
        checks = {"kafka": kafka, "index": index, "minio": minio}
        return _Observed(checks, facts["lags"], facts["dlq"], datetime.now(UTC), queue)

    async def _queue_fields(self) -> dict[str, Any] | None:
        return None if self._queue is None else await self._queue.fields()

    async def close(self) -> None:
        await self._ready.close()
        await self._observed.close()
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.close()
        # A MinIO request in flight ends by itself within the time limit.
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _kafka_probe(self) -> KafkaProbe:
        """The open probe; a new one when none is open (the first check, or the last start
        failed). aiokafka reconnects an open one by itself after an outage."""
        async with self._probe_lock:
            if self._probe is None:
                probe = KafkaProbe(self._settings, timeout_s=self._timeout_s)
                self.kafka_clients_made += 1
                self._probe = await probe.__aenter__()  # closes itself when it fails
            return self._probe

    async def _kafka(self, facts: dict[str, Any] | None = None) -> None:
        """Kafka answers; with ``facts``, also the groups' lag and the DLQ's size there.

        The check passes once the brokers answered; lag and DLQ are extras (None when
        they could not be read in time)."""
        settings = self._settings
        probe = await self._kafka_probe()
        await probe.size(settings.kafka_events_topic)
        if facts is None:
            return
        with contextlib.suppress(ConsumerError):
            for role, group in (
                ("indexer", settings.kafka_group_id),
                ("processor", settings.kafka_processor_group_id),
            ):
                facts["lags"][role] = await probe.lag(group, settings.kafka_events_topic)
            facts["dlq"] = await probe.size(settings.kafka_dlq_topic)

    async def _index(self) -> None:
        if self._store is None:
            raise ConsumerError("no index open in this process")
        await self._store.ping()

    async def _minio_answers(self) -> None:
        bucket = self._settings.minio_audio_bucket_name

        def head_bucket() -> None:
            with minio_operation("HeadBucket", bucket):
                try:
                    self._minio.bucket_exists(bucket)
                except (HTTPError, OSError) as exc:  # says so when it is TLS trust
                    raise ConnectionFailed(describe_minio_failure(exc, self._settings)) from exc

        # Its own thread, not the loop's default executor: a hung MinIO cannot take more
        # than one thread, and the caller's time limit does not wait for it.
        await asyncio.get_running_loop().run_in_executor(self._executor, head_bucket)
