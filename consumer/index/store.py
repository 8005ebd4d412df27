"""What the rest of the consumer needs from the index, as Protocols.

``IndexStore`` is the store both backends (``SqliteIndex``, ``PostgresIndex``) implement
and every caller (indexer, CLI, processors, reconcile, retention) uses; ``BatchWriter``
is the few set-wise steps a backend supplies to ``run_batch`` (decisions.py) inside its
transaction; ``AsyncLifecycle`` gives ``async with`` to anything with ``start``/``close``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Literal, Protocol, Self

from consumer.events import EventKind
from consumer.index.records import (
    BatchResult,
    Claims,
    GrowthRow,
    Item,
    JobOutcome,
    JobRecord,
    JobRequest,
    JobStatus,
    JournalRecord,
    Lease,
    ObjectQuery,
    ObjectRecord,
    ObjectRow,
    RowId,
    Transcript,
    UsageRow,
)


class AsyncLifecycle:
    """``async with store:`` = ``await store.start()`` … ``await store.close()``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class IndexStore(Protocol):
    """What the indexer, the CLI and the processors need from the index.

    Every method raises IndexUnavailable (retriable) when the database cannot be reached or
    is locked, and IndexWriteFailed for permanent failures.
    """

    db_system: str  # OpenTelemetry's db.system.name: "sqlite", "postgresql"

    async def start(self) -> None:
        """Connect and apply pending migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def ping(self) -> None:
        """Round-trip to the database; raises IndexUnavailable if it does not answer."""

    async def apply_batch(self, items: Sequence[Item]) -> BatchResult:
        """Journal and apply ``items`` in ONE transaction; idempotent under redelivery."""

    async def list_objects(self, query: ObjectQuery) -> list[ObjectRecord]:
        """The objects ``query`` selects (see ObjectQuery), ordered by (bucket, key,
        version_id). Raises InvalidInput for a text without words."""

    async def get_object(
        self, bucket: str, key: str, version_id: str = ""
    ) -> ObjectRecord | None: ...

    async def usage(self, *, by: Literal["user", "bucket"]) -> list[UsageRow]:
        """Live and stored objects and bytes per group (UsageRow), ordered by group
        (None last)."""

    async def put_transcript(self, transcript: Transcript) -> None:
        """Index (or re-index: the entry of that version and processor is replaced) a
        transcript for full-text search. Entries of removed versions are dropped by
        ``apply_batch``."""

    async def growth(
        self, *, since: date, bucket: str | None = None, user_id: str | None = None
    ) -> list[GrowthRow]:
        """What each UTC day from ``since`` on changed (GrowthRow), from the journal;
        only days with changes, oldest first. ``bucket`` / ``user_id`` narrow it down."""

    async def journal(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int = 100,
    ) -> list[JournalRecord]:
        """Most recently journaled first; ``kinds`` keeps only events of those kinds."""

    async def prune_journal(self, older_than: datetime) -> int:
        """Delete journal entries whose event_time is before ``older_than``; their count."""

    async def counts(self) -> dict[str, int]:
        """{"objects": live rows, "tombstones": deleted rows, "journal": journal rows}."""

    async def claim_jobs(self, requests: Sequence[JobRequest], lease: Lease) -> Claims:
        """Decide every request (``claim_decision``) in one transaction that excludes
        other claimers of the same objects; the jobs to run are marked pending under
        ``lease``. Requests for one job are reduced to the newest (``latest_requests``)."""

    async def start_job(self, request: JobRequest, owner: str) -> int:
        """Mark the job running; its attempt number (1 for the first run). Raises
        LeaseLost when ``owner`` no longer holds the job's lease."""

    async def finish_job(self, request: JobRequest, outcome: JobOutcome, owner: str) -> bool:
        """Record how the job ended (done or failed) and release its lease; False (and
        nothing written) when ``owner`` no longer holds the lease."""

    async def renew_leases(self, lease: Lease) -> int:
        """Extend every unfinished job leased to ``lease.owner``; how many."""

    async def jobs(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        status: JobStatus | None = None,
        limit: int = 1000,
    ) -> list[JobRecord]:
        """Jobs ordered by (bucket, key, version_id, processor)."""


class BatchWriter(Protocol):
    """The set-wise steps of ``run_batch``, inside the backend's transaction. Each step is
    a few statements for the whole batch, never one per event: the batch is the unit of
    work, and per-statement overhead (a statement step handing the GIL over for SQLite, a
    round trip for PostgreSQL) would otherwise dominate."""

    async def journal_new(self, items: Sequence[Item]) -> list[Item]:
        """Journal the items not journaled yet (identities are distinct within ``items``);
        the items actually inserted, in their order."""

    async def load_rows(
        self, rows: Collection[RowId], all_versions_of: Collection[tuple[str, str]]
    ) -> list[ObjectRow]:
        """The stored rows (tombstones too) of ``rows``, and every version of each
        (bucket, key) in ``all_versions_of``."""

    async def save_rows(self, rows: Sequence[ObjectRow]) -> None:
        """Insert each row, or replace every column of the stored row with its values."""
