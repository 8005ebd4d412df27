"""The index over SQL, written once: every IndexStore operation, for either backend.

``SqlIndex`` holds the operations; a backend (``SqliteIndex``, ``PostgresIndex``) is a
subclass that supplies only what truly differs between the two databases:

* its ``dialect`` (placeholders, how a time travels, the metadata and text-search
  conditions: see ``sql.Dialect``) and ``row_reader`` (how stored values come back, see
  ``sql.RowReader``), its day-of-an-event expression and its transcript upsert;
* its connection: ``_open`` / ``_prepare`` / ``_release`` (start and close), and the
  three ways an operation holds it — ``_reading`` (one read), ``_writing`` (one write
  that commits alone) and ``_exclusive`` (one transaction that no other writer of the
  same objects runs alongside: ``apply_batch``, ``claim_jobs``);
* its driver calls: ``_rows`` and ``_execute``, ``_translated`` (its errors as
  IndexUnavailable / IndexWriteFailed) and ``_clock`` (whose time leases go by);
* the steps whose many rows travel differently (VALUES lists, arrays, JSON): the batch's
  ``_writer`` (the BatchWriter of ``run_batch``), ``_stored_jobs`` and ``_pend_jobs``.

Statements here are written with ``{}`` where a value goes (``sql.numbered``).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import UTC, date, datetime, time
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar

from consumer.errors import IndexUnavailable, LeaseLost
from consumer.events import EventKind
from consumer.index.decisions import (
    JobStart,
    decide_claims,
    job_start,
    latest_requests,
    run_batch,
)
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
    Transcript,
    UsageRow,
)
from consumer.index.sql import (
    OBJECT_COLUMNS,
    PROCESSING_STATUS_SQL,
    Dialect,
    RowReader,
    counts_query,
    growth_query,
    jobs_query,
    journal_query,
    listing_query,
    numbered,
    usage_query,
)
from consumer.index.store import AsyncLifecycle, BatchWriter
from consumer.index.threads import collector_paused

Handle = TypeVar("Handle")  # what start() opens: a connection, a pool
Conn = TypeVar("Conn")  # what one operation works on: a connection

_GET_OBJECT: Final = (
    f"SELECT {OBJECT_COLUMNS}, ({PROCESSING_STATUS_SQL}) AS processing_status"  # noqa: S608 - constant fragments
    " FROM objects WHERE bucket = {} AND key = {} AND version_id = {}"
)

_PRUNE_JOURNAL: Final = "DELETE FROM journal WHERE event_time < {}"

# A job's runner must still hold its lease: another process may have taken it over.
_START_JOB: Final = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = {}, updated_at = {}
WHERE bucket = {} AND key = {} AND version_id = {} AND processor = {} AND sequencer = {}
  AND lease_owner = {} AND status IN ('pending', 'running')
RETURNING attempts"""

_FINISH_JOB: Final = """
UPDATE jobs SET status = {}, last_error = {}, result_bucket = {}, result_key = {},
                duration_ms = {}, finished_at = {}, updated_at = {}, lease_expires_at = NULL
WHERE bucket = {} AND key = {} AND version_id = {} AND processor = {} AND sequencer = {}
  AND lease_owner = {} AND status IN ('pending', 'running')"""

_RENEW_LEASES: Final = """
UPDATE jobs SET lease_expires_at = {}
WHERE lease_owner = {} AND status IN ('pending', 'running')"""


class SqlIndex(AsyncLifecycle, ABC, Generic[Handle, Conn]):
    """IndexStore on a SQL database; a subclass names the database (see the module).

    ``_lock`` is held while the store starts or closes; a backend whose one connection
    cannot be shared (SQLite) holds it for every operation too, so operations take turns
    and close waits for the one under way.
    """

    db_system: str  # OpenTelemetry's db.system.name
    dialect: ClassVar[Dialect]
    row_reader: ClassVar[RowReader]
    # ``event_time`` as its UTC day, 'YYYY-MM-DD' (growth groups by it).
    event_day: ClassVar[str]
    # Inserts or replaces a transcript: ``_transcript_values`` then the time, as parameters.
    put_transcript_sql: ClassVar[str]
    # Run in the pruning transaction once entries went (SQLite: heads left pointing nowhere).
    after_prune: ClassVar[str | None] = None

    def __init__(self) -> None:
        self._handle: Handle | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and apply pending migrations. Idempotent.

        Raises IndexUnavailable (cannot connect, locked, too many connections) or
        IndexWriteFailed (e.g. authentication refused, not a database).
        """
        async with self._lock:
            if self._handle is not None:
                return
            with self._translated():
                handle = await self._open()
            try:
                with self._translated():
                    await self._prepare(handle)
            except BaseException:
                await self._release(handle)
                raise
            self._handle = handle

    async def close(self) -> None:
        """Release the connection (or pool) once the operations under way are done.
        Idempotent."""
        async with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                with self._translated():
                    await self._release(handle)

    async def ping(self) -> None:
        """Raises IndexUnavailable if the database does not answer right now."""
        await self._fetch("SELECT 1", ())

    # --- writes ------------------------------------------------------------------------

    async def apply_batch(self, items: Sequence[Item]) -> BatchResult:
        """See IndexStore.apply_batch: one transaction for the whole batch, exclusive for
        its objects."""
        if not items:
            return BatchResult(0, 0, 0, 0)
        with collector_paused():
            return await self._apply(items, datetime.now(UTC))

    async def prune_journal(self, older_than: datetime) -> int:
        """Delete journal entries with event_time before ``older_than``; their count.

        On SQLite a key's history is a chain of entries and ends at the first one pruned:
        an entry journaled before a pruned one but with a later event time (a late event
        right at the cutoff) is no longer listed by key, and goes with a later prune.
        """
        async with self._writing() as conn:
            pruned = await self._execute(
                conn, self._sql(_PRUNE_JOURNAL), (self.dialect.moment(older_than),)
            )
            if pruned and self.after_prune is not None:
                await self._execute(conn, self.after_prune, ())
            return pruned

    async def put_transcript(self, transcript: Transcript) -> None:
        """See IndexStore.put_transcript."""
        values = (*self._transcript_values(transcript), self.dialect.moment(datetime.now(UTC)))
        async with self._writing() as conn:
            await self._execute(conn, self.put_transcript_sql, values)

    # --- reads -------------------------------------------------------------------------

    async def list_objects(self, query: ObjectQuery) -> list[ObjectRecord]:
        """See IndexStore.list_objects."""
        sql, params = listing_query(query, self.dialect)
        return [self.row_reader.object_record(row) for row in await self._fetch(sql, params)]

    async def get_object(self, bucket: str, key: str, version_id: str = "") -> ObjectRecord | None:
        """The row of (bucket, key, version_id), tombstone or not; None if unknown."""
        rows = await self._fetch(self._sql(_GET_OBJECT), (bucket, key, version_id))
        return self.row_reader.object_record(rows[0]) if rows else None

    async def usage(self, *, by: Literal["user", "bucket"]) -> list[UsageRow]:
        """See IndexStore.usage."""
        rows = await self._fetch(usage_query(by, self.dialect), ())
        return [UsageRow(*row) for row in rows]

    async def growth(
        self, *, since: date, bucket: str | None = None, user_id: str | None = None
    ) -> list[GrowthRow]:
        """See IndexStore.growth."""
        start = self.dialect.moment(datetime.combine(since, time(), tzinfo=UTC))
        sql, params = growth_query(
            self.dialect.placeholder, self.event_day, start, bucket=bucket, user_id=user_id
        )
        rows = await self._fetch(sql, params)
        return [GrowthRow(date.fromisoformat(row[0]), *row[1:]) for row in rows]

    async def journal(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int = 100,
    ) -> list[JournalRecord]:
        """See IndexStore.journal."""
        sql, params = journal_query(self.dialect, bucket=bucket, key=key, kinds=kinds, limit=limit)
        return [self.row_reader.journal_record(row) for row in await self._fetch(sql, params)]

    async def counts(self) -> dict[str, int]:
        """See IndexStore.counts."""
        (row,) = await self._fetch(counts_query(self.dialect), ())
        return {"objects": row[0], "tombstones": row[1], "journal": row[2]}

    # --- processing jobs -----------------------------------------------------------------

    async def claim_jobs(self, requests: Sequence[JobRequest], lease: Lease) -> Claims:
        """See IndexStore.claim_jobs. Exclusive for the objects, as in apply_batch, so two
        processors cannot both claim one job."""
        requests = latest_requests(requests)
        if not requests:
            return Claims(run=[])
        async with self._exclusive((r.bucket, r.key) for r in requests) as conn:
            rows = await self._stored_jobs(conn, [r.ident for r in requests])
            stored = {job.ident: job for job in map(self.row_reader.job_record, rows)}
            now = await self._clock(conn)
            claims = decide_claims(requests, stored, now=now)
            if claims.run:
                starts = [job_start(stored.get(r.ident), r) for r in claims.run]
                await self._pend_jobs(conn, starts, now, lease)
            return claims

    async def start_job(self, request: JobRequest, owner: str) -> int:
        """See IndexStore.start_job."""
        now = self.dialect.moment(datetime.now(UTC))
        async with self._writing() as conn:
            rows = await self._rows(
                conn, self._sql(_START_JOB), (now, now, *request.ident, request.sequencer, owner)
            )
        if not rows:
            raise LeaseLost(f"the lease of {'/'.join(request.ident)} went to another process")
        return int(rows[0][0])

    async def renew_leases(self, lease: Lease) -> int:
        """See IndexStore.renew_leases."""
        async with self._writing() as conn:
            expires = self.dialect.moment(lease.expires_at(await self._clock(conn)))
            return await self._execute(conn, self._sql(_RENEW_LEASES), (expires, lease.owner))

    async def finish_job(self, request: JobRequest, outcome: JobOutcome, owner: str) -> bool:
        """See IndexStore.finish_job."""
        now = self.dialect.moment(datetime.now(UTC))
        values = (
            outcome.status.value,
            outcome.error,
            outcome.result_bucket,
            outcome.result_key,
            outcome.duration_ms,
            now,
            now,
            *request.ident,
            request.sequencer,
            owner,
        )
        async with self._writing() as conn:
            return await self._execute(conn, self._sql(_FINISH_JOB), values) > 0

    async def jobs(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        status: JobStatus | None = None,
        limit: int = 1000,
    ) -> list[JobRecord]:
        """See IndexStore.jobs."""
        sql, params = jobs_query(
            self.dialect.placeholder, bucket=bucket, key=key, status=status, limit=limit
        )
        return [self.row_reader.job_record(row) for row in await self._fetch(sql, params)]

    # --- plumbing ------------------------------------------------------------------------

    def _started(self) -> Handle:
        if self._handle is None:
            raise IndexUnavailable(f"{self!r} is not started (call start() first)")
        return self._handle

    def _sql(self, template: str) -> str:
        return numbered(template, self.dialect.placeholder)

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        async with self._reading() as conn:
            return await self._rows(conn, sql, params)

    # --- what each backend supplies ----------------------------------------------------

    @abstractmethod
    def _translated(self) -> AbstractContextManager[None]:
        """Turns the driver's errors into IndexUnavailable (retriable) or
        IndexWriteFailed."""

    @abstractmethod
    async def _open(self) -> Handle:
        """Connect (inside ``_translated``)."""

    @abstractmethod
    async def _prepare(self, handle: Handle) -> None:
        """Configure and migrate a handle ``_open`` gave (inside ``_translated``)."""

    @abstractmethod
    async def _release(self, handle: Handle) -> None:
        """Close a handle ``_open`` gave."""

    @abstractmethod
    def _reading(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for one read, errors translated; IndexUnavailable if not
        started."""

    @abstractmethod
    def _writing(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for one write that commits when the block ends."""

    @abstractmethod
    def _exclusive(self, objects: Iterable[tuple[str, str]]) -> AbstractAsyncContextManager[Conn]:
        """One transaction, committed when the block ends, in which no other writer
        touches the (bucket, key) ``objects``."""

    @abstractmethod
    async def _rows(self, conn: Conn, sql: str, params: Sequence[object]) -> list[Any]:
        """The rows ``sql`` returns."""

    @abstractmethod
    async def _execute(self, conn: Conn, sql: str, params: Sequence[object]) -> int:
        """Run ``sql``; the number of rows it changed."""

    @abstractmethod
    async def _clock(self, conn: Conn) -> datetime:
        """Now, by the clock leases are given and compared by."""

    async def _apply(self, items: Sequence[Item], now: datetime) -> BatchResult:
        """``run_batch`` over this backend's ``_writer`` in one transaction exclusive for
        the batch's objects (``now`` is its ``indexed_at``); a backend may run it elsewhere
        (SQLite: the whole transaction in its connection's thread)."""
        async with self._exclusive((event.bucket, event.key) for event, _ in items) as conn:
            return await run_batch(self._writer(conn, now), items, now)

    @abstractmethod
    def _writer(self, conn: Conn, now: datetime) -> BatchWriter:
        """The BatchWriter steps of one ``apply_batch`` inside its transaction."""

    @abstractmethod
    async def _stored_jobs(
        self, conn: Conn, idents: Sequence[tuple[str, str, str, str]]
    ) -> list[Any]:
        """The stored rows (``JOB_COLUMNS``) of the jobs ``idents`` name."""

    @abstractmethod
    async def _pend_jobs(
        self, conn: Conn, jobs: Sequence[JobStart], now: datetime, lease: Lease
    ) -> None:
        """Store ``jobs`` as pending from ``now``, leased to ``lease.owner``."""

    @abstractmethod
    def _transcript_values(self, transcript: Transcript) -> tuple[object, ...]:
        """``put_transcript_sql``'s parameters but the last (the time)."""
