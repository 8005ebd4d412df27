"""``python -m consumer run``: the long-running roles, with signals and a bounded shutdown.

Roles: ``indexer`` (group "indexer"), ``processor`` (group "processor"), ``retention`` (the
sweeper, on an interval), ``all`` (the three in one process, sharing the index handle).
SIGTERM / SIGINT → stop fetching, finish the batch in flight (the processor: its jobs;
the sweeper: its delete request), commit, close. If that takes longer than
SHUTDOWN_GRACE_S the roles are cancelled (the indexer's write and commit are shielded, a
processor's unfinished jobs are rerun after redelivery), so nothing is lost.

An index that cannot be reached at start is waited for (as Kafka is, by each role), so an
outage that begins before the first connection pauses the service like one later on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import structlog

from consumer.errors import StopRequested
from consumer.health import HealthReporter, HealthServer
from consumer.index import IndexStore, open_index
from consumer.indexer import Indexer
from consumer.processing.registry import load_processors
from consumer.processing.worker import ProcessorWorker
from consumer.repair.auto import AutoReconcile, build_auto_reconcile
from consumer.retention.sweeper import RetentionWorker
from consumer.retry import retry
from consumer.settings import Settings
from consumer.setup.notify_config import notify_target_id
from consumer.telemetry import configure_telemetry, instruments

log = structlog.get_logger(__name__)

JOURNAL_PRUNE_INTERVAL_S = 3600.0
# Longest wait between two tries to reach the index at start: a server that comes back is
# noticed within seconds (as Kafka's start, consumer/kafka/clients.py).
INDEX_START_RETRY_CAP_S = 5.0


class Role(StrEnum):
    INDEXER = "indexer"
    PROCESSOR = "processor"
    RETENTION = "retention"
    ALL = "all"


class Worker(Protocol):
    """A long-running role: ``run`` until ``stop()`` (or, with burst, until drained)."""

    def stop(self) -> None: ...

    @property
    def stopping(self) -> bool: ...

    async def run(self, *, burst: bool = False) -> Any: ...

    def status(self) -> dict[str, object]:
        """Counters for /status."""

    def summary(self) -> dict[str, int]:
        """Counters worth a line at shutdown."""


async def _prune_journal_forever(store: IndexStore, retention_days: int) -> None:
    """Journal retention: drop entries older than the configured age, once an hour."""
    while True:
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        try:
            removed = await store.prune_journal(cutoff)
        except Exception as exc:  # a failed prune is retried next hour; never fatal
            log.warning("journal prune failed", error=str(exc))
        else:
            if removed:
                log.info("journal pruned", removed=removed, older_than=cutoff.isoformat())
        await asyncio.sleep(JOURNAL_PRUNE_INTERVAL_S)


async def _count_storage_forever(store: IndexStore, interval_s: float) -> None:
    """Objects and bytes per bucket for the metrics, from the index, every interval."""
    while True:
        try:
            rows = await store.usage(by="bucket")
        except Exception as exc:  # the next round tries again; metrics keep the last count
            log.debug("storage count failed", error=str(exc))
        else:
            instruments.storage = {row.group or "": (row.objects, row.bytes) for row in rows}
        await asyncio.sleep(interval_s)


def _worker_stats(workers: dict[str, Worker]) -> dict[str, dict[str, Any]]:
    """Each role's counters for /status."""
    return {name: worker.status() for name, worker in workers.items()}


def processor_dead_letters_malformed(settings: Settings, role: Role) -> bool:
    """Whether the processor dead-letters malformed messages: the indexer does where it
    runs; a processor without an indexer in its process does, unless told not to
    (PROCESSING_DEAD_LETTER_MALFORMED=false, where separate indexers read the topic). Pure."""
    if settings.processing_dead_letter_malformed is not None:
        return settings.processing_dead_letter_malformed
    return role is Role.PROCESSOR


def _background_tasks(
    settings: Settings, store: IndexStore, role: Role, auto: AutoReconcile | None
) -> list[asyncio.Task[None]]:
    """The tasks beside the roles: storage counts, journal pruning (indexer), MinIO's
    queue watch and the automatic reconcile (indexer)."""
    background = [
        asyncio.create_task(_count_storage_forever(store, settings.storage_count_interval_s))
    ]
    if auto is not None:
        background.append(asyncio.create_task(auto.run(), name="auto-reconcile"))
    if role in (Role.INDEXER, Role.ALL) and settings.index_journal_retention_days > 0:
        background.append(
            asyncio.create_task(
                _prune_journal_forever(store, settings.index_journal_retention_days)
            )
        )
    return background


def _auto_reconcile(settings: Settings, store: IndexStore, role: Role) -> AutoReconcile | None:
    """The indexer role's watch of MinIO's queue and its automatic reconcile (every
    indexer process runs it; a lease in the index lets one run at a time)."""
    if role not in (Role.INDEXER, Role.ALL):
        return None
    if not (settings.reconcile_auto or settings.minio_metrics_interval_s):
        return None
    return build_auto_reconcile(settings, store)


def _workers(settings: Settings, store: IndexStore, role: Role) -> dict[str, Worker]:
    workers: dict[str, Worker] = {}
    if role in (Role.INDEXER, Role.ALL):
        workers["indexer"] = Indexer(settings, store)
    if role in (Role.PROCESSOR, Role.ALL):
        workers["processor"] = ProcessorWorker(
            settings,
            store,
            load_processors(settings),
            dead_letter_malformed=processor_dead_letters_malformed(settings, role),
        )
    if role in (Role.RETENTION, Role.ALL):
        workers["retention"] = RetentionWorker(settings, store)
    return workers


async def run_service(settings: Settings, role: Role, *, burst: bool = False) -> dict[str, Any]:
    """Run ``role`` until a signal (or, with ``burst``, until the topic is drained); the
    stats of each worker by name. If one worker fails, the others are stopped too."""
    configure_telemetry()
    store = open_index(settings.index_url, command_timeout_s=settings.index_command_timeout_s)
    if not await _start_when_reachable(store, settings):
        return {}
    async with store:  # started above; closed at the end
        workers = _workers(settings, store, role)
        auto = _auto_reconcile(settings, store, role)

        def stats() -> dict[str, dict[str, Any]]:
            extra = {"auto_reconcile": dataclasses.asdict(auto.stats)} if auto else {}
            return _worker_stats(workers) | extra

        reporter = HealthReporter(
            settings, store, workers=stats, notify_target=lambda: notify_target_id(settings)
        )
        health = HealthServer(settings.health_host, settings.health_port, reporter)
        await health.start()
        tasks = {
            name: asyncio.create_task(worker.run(burst=burst), name=name)
            for name, worker in workers.items()
        }
        background = _background_tasks(settings, store, role, auto)
        loop = asyncio.get_running_loop()

        def stop_all() -> None:
            for worker in workers.values():
                worker.stop()

        def on_signal(signum: signal.Signals) -> None:
            log.info("shutting down", signal=signum.name, grace_s=settings.shutdown_grace_s)
            stop_all()
            for task in tasks.values():
                loop.call_later(settings.shutdown_grace_s, task.cancel)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        log.info(
            "consumer running",
            role=str(role),
            workers=sorted(workers),
            topic=settings.kafka_events_topic,
            index=_describe_index(settings.index_url),
        )
        try:
            return await _wait_for_workers(tasks, workers, stop_all, settings.shutdown_grace_s)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await health.close()
            log.info("consumer stopped", **_summary(workers))


async def _start_when_reachable(store: IndexStore, settings: Settings) -> bool:
    """Start ``store``, tried again while the index is unavailable (a permanent refusal,
    e.g. bad credentials, is raised at once); False when a signal came first. Nothing was
    read yet, so stopping here loses nothing."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await retry(
            store.start,
            what="index start",
            base_s=settings.index_retry_backoff_s,
            cap_s=INDEX_START_RETRY_CAP_S,
            stop=stop,
        )
    except StopRequested:
        log.info("stopped before the index was reachable")
        return False
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return True


async def _wait_for_workers(
    tasks: dict[str, asyncio.Task[Any]],
    workers: dict[str, Worker],
    stop_all: Callable[[], None],
    grace_s: float,
) -> dict[str, Any]:
    """Every worker's result; the first failure stops the others and is raised."""
    done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
    failed = [t for t in done if not t.cancelled() and t.exception() is not None]
    if failed:
        stop_all()
        await asyncio.wait(tasks.values(), timeout=grace_s)
        for task in tasks.values():
            task.cancel()
        raise failed[0].exception()  # type: ignore[misc]
    await asyncio.wait(tasks.values())
    results: dict[str, Any] = {}
    for name, task in tasks.items():
        if task.cancelled():
            if not workers[name].stopping:
                raise asyncio.CancelledError
            # The grace period ran out: the work in flight was finished or left
            # uncommitted (redelivered on the next start); either way nothing is lost.
            log.warning("grace period expired, stopped without draining", worker=name)
            continue
        results[name] = task.result()
    return results


def _describe_index(url: str) -> str:
    """The index URL without credentials, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _summary(workers: dict[str, Worker]) -> dict[str, int]:
    """The counters worth a line at shutdown, of every role."""
    fields: dict[str, int] = {}
    for worker in workers.values():
        fields.update(worker.summary())
    return fields
