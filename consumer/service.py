"""``python -m consumer run``: the long-running roles, with signals and a bounded shutdown.

SIGTERM / SIGINT → stop fetching, finish the batch in flight, commit, close. If that takes
longer than SHUTDOWN_GRACE_S the roles are cancelled (the batch's index write and commit
are shielded, so a batch is either fully done or redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import structlog

from consumer.index import IndexStore, open_index
from consumer.indexer import Indexer, IndexerStats
from consumer.settings import Settings

log = structlog.get_logger(__name__)

JOURNAL_PRUNE_INTERVAL_S = 3600.0


class Role(StrEnum):
    INDEXER = "indexer"
    ALL = "all"


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


async def run_service(settings: Settings, role: Role, *, burst: bool = False) -> IndexerStats:
    """Run ``role`` until a signal (or, with ``burst``, until the topic is drained)."""
    store = open_index(settings.index_url)
    async with store:
        indexer = Indexer(settings, store)
        indexing = asyncio.create_task(indexer.run(burst=burst), name="indexer")
        background: list[asyncio.Task[None]] = []
        if settings.index_journal_retention_days > 0:
            background.append(
                asyncio.create_task(
                    _prune_journal_forever(store, settings.index_journal_retention_days)
                )
            )
        loop = asyncio.get_running_loop()

        def on_signal(signum: signal.Signals) -> None:
            log.info("shutting down", signal=signum.name, grace_s=settings.shutdown_grace_s)
            indexer.stop()
            loop.call_later(settings.shutdown_grace_s, indexing.cancel)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        log.info(
            "consumer running",
            role=str(role),
            topic=indexer.topic,
            group=indexer.group_id,
            index=_describe_index(settings.index_url),
        )
        try:
            return await indexing
        except asyncio.CancelledError:
            if not (indexer.stopping and indexing.cancelled()):
                raise
            # The grace period ran out: the batch in flight was finished or left
            # uncommitted (redelivered on the next start); either way nothing is lost.
            log.warning(
                "grace period expired, stopped without draining", grace_s=settings.shutdown_grace_s
            )
            return indexer.stats
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            log.info("consumer stopped", **_stats_fields(indexer.stats))


def _describe_index(url: str) -> str:
    """The index URL without credentials, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _stats_fields(stats: IndexerStats) -> dict[str, int]:
    return {
        "batches": stats.batches,
        "events": stats.events,
        "journaled": stats.journaled,
        "duplicates": stats.duplicates,
        "dead_lettered": stats.dead_lettered,
    }
