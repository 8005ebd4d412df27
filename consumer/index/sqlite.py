"""The embedded index: one SQLite file, WAL mode, one connection per process.

WAL lets readers (the CLI) work while the indexer writes. Every write transaction starts
with BEGIN IMMEDIATE so a second writer waits up to ``busy_timeout_s`` for the lock rather
than failing half-way when a read lock cannot be upgraded. ``synchronous=FULL`` because
Kafka offsets are committed after ``apply_batch`` returns: a transaction lost in a power
cut would be an event lost for good.

Times are stored as ISO-8601 UTC text with microseconds (fixed width, so text order is
time order); booleans as 0/1; user metadata as JSON text.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Final, Literal

import aiosqlite

from consumer.errors import IndexUnavailable, IndexWriteFailed, LeaseLost
from consumer.events import EventKind, ObjectEvent
from consumer.index.decisions import (
    canonical_json,
    decide_claims,
    journal_id,
    latest_requests,
    run_batch,
)
from consumer.index.migrations import migrate_sqlite
from consumer.index.records import (
    BatchResult,
    Claims,
    GrowthRow,
    Item,
    JobOutcome,
    JobRecord,
    JobRequest,
    JobStatus,
    JournalId,
    JournalRecord,
    KafkaPosition,
    Lease,
    ObjectQuery,
    ObjectRecord,
    RowId,
    Transcript,
    UsageRow,
)
from consumer.index.sql import (
    JOB_COLUMNS,
    JOB_PEND_UPSERT,
    OBJECT_COLUMNS,
    OBJECT_UPSERT,
    PROCESSING_STATUS_SQL,
    Conditions,
    Dialect,
    chunked,
    fts5_query,
    growth_query,
    jobs_query,
    journal_query,
    journal_values,
    listing_query,
    qmark,
    usage_query,
)
from consumer.index.store import AsyncLifecycle

# Primary result codes (the low byte of extended codes) that mean "try again later".
_TRANSIENT_CODES: Final = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR}
)


_INSERT_JOURNAL: Final = """
INSERT INTO journal (bucket, key, version_id, event_name, kind, event_time, sequencer,
                     principal_id, source_ip, user_agent, request_id, size, etag,
                     kafka_topic, kafka_partition, kafka_offset, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (bucket, key, version_id, event_name, sequencer) DO NOTHING"""
# Ids only grow (AUTOINCREMENT): a row with an id above the largest before the insert was
# inserted by it.
_LAST_JOURNAL_ID: Final = "SELECT coalesce(max(id), 0) FROM journal"
# "<stmt> (VALUES (?, …), …) AS v JOIN <table> ON …": one indexed lookup per listed row.
_JOURNALED_SINCE: Final = """
SELECT j.bucket, j.key, j.version_id, j.event_name, j.sequencer
FROM (VALUES {rows}) AS v
JOIN journal AS j ON j.bucket = v.column1 AND j.key = v.column2 AND j.version_id = v.column3
                 AND j.event_name = v.column4 AND j.sequencer = v.column5
WHERE j.id > ?"""
# Rows per such statement: each statement is a hop to aiosqlite's thread, but each
# distinct size is compiled (and cached) on its own, so a fixed, moderate size; under the
# 999-parameter limit of SQLite before 3.32 as well.
_MAX_PARAMETERS: Final = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_VALUES_ROWS: Final = 500
# Job claims keep their historical slices (a few rows at a time anyway).
_ROWS_PER_STATEMENT: Final = 150
# Column names are unqualified: the VALUES side only has column1, column2, ...
_LOAD_ROWS: Final = (
    f"SELECT {OBJECT_COLUMNS} FROM (VALUES {{rows}}) AS v"  # noqa: S608 - constant fragments
    " JOIN objects ON bucket = v.column1 AND key = v.column2 AND version_id = v.column3"
)
_LOAD_ALL_VERSIONS: Final = (
    f"SELECT {OBJECT_COLUMNS} FROM (VALUES {{rows}}) AS v"  # noqa: S608 - constant fragments
    " JOIN objects ON bucket = v.column1 AND key = v.column2"
)

_SAVE_ROW: Final = (
    f"""
INSERT INTO objects ({OBJECT_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""  # noqa: S608 - constant fragments
    + OBJECT_UPSERT
)

_LOAD_JOBS: Final = (
    f"SELECT {JOB_COLUMNS} FROM (VALUES {{rows}}) AS v"  # noqa: S608 - constant fragments
    " JOIN jobs ON bucket = v.column1 AND key = v.column2 AND version_id = v.column3"
    " AND processor = v.column4"
)

_PEND_JOB: Final = (
    """
INSERT INTO jobs (bucket, key, version_id, processor, sequencer, etag, status, attempts,
                  created_at, updated_at, lease_owner, lease_expires_at)
VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)"""
    + JOB_PEND_UPSERT
)

_START_JOB: Final = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, updated_at = ?
WHERE bucket = ? AND key = ? AND version_id = ? AND processor = ? AND sequencer = ?
  AND lease_owner = ? AND status IN ('pending', 'running')
RETURNING attempts"""

_FINISH_JOB: Final = """
UPDATE jobs SET status = ?, last_error = ?, result_bucket = ?, result_key = ?,
                duration_ms = ?, finished_at = ?, updated_at = ?, lease_expires_at = NULL
WHERE bucket = ? AND key = ? AND version_id = ? AND processor = ? AND sequencer = ?
  AND lease_owner = ? AND status IN ('pending', 'running')"""

_RENEW_LEASES: Final = """
UPDATE jobs SET lease_expires_at = ?
WHERE lease_owner = ? AND status IN ('pending', 'running')"""

_LISTEDOBJECT_COLUMNS: Final = f"{OBJECT_COLUMNS}, ({PROCESSING_STATUS_SQL})"

_PUT_TRANSCRIPT: Final = """
INSERT INTO transcripts (bucket, key, version_id, processor, language, text, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (bucket, key, version_id, processor) DO UPDATE SET
    language = excluded.language, text = excluded.text, updated_at = excluded.updated_at"""

_DROP_TRANSCRIPTS: Final = "DELETE FROM transcripts WHERE bucket = ? AND key = ? AND version_id = ?"

# The hits of an FTS5 match, one per transcript; the snippet marks hits in [brackets].
_TEXT_HITS: Final = (
    "SELECT t.bucket AS hit_bucket, t.key AS hit_key, t.version_id AS hit_version,"
    " snippet(transcripts_fts, 0, '[', ']', '…', 16) AS snippet"
    " FROM transcripts_fts JOIN transcripts AS t ON t.id = transcripts_fts.rowid"
    " WHERE transcripts_fts MATCH {0}"
)

_COUNTS: Final = """
SELECT (SELECT COUNT(*) FROM objects WHERE deleted = 0),
       (SELECT COUNT(*) FROM objects WHERE deleted = 1),
       (SELECT COUNT(*) FROM journal)"""


class SqliteIndex(AsyncLifecycle):
    """IndexStore on one SQLite file. Operations of one instance are serialised.

    ``busy_timeout_s``: how long a write waits for another process's lock before
    IndexUnavailable is raised.
    """

    db_system = "sqlite"  # OpenTelemetry's db.system.name

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self._path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._conn: aiosqlite.Connection | None = None
        # One connection cannot hold two transactions: callers take turns.
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"SqliteIndex({str(self._path)!r})"

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the file (creating its directory) and migrate. Idempotent.

        Raises IndexUnavailable (cannot open, locked) or IndexWriteFailed.
        """
        async with self._lock:
            if self._conn is not None:
                return
            with _translated():
                await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)
                conn = await aiosqlite.connect(
                    self._path, timeout=self._busy_timeout_s, isolation_level=None
                )
            try:
                with _translated():
                    await _configure(conn)
                    await migrate_sqlite(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn

    async def close(self) -> None:
        """Close the connection. Idempotent."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with _translated():
                    await conn.close()

    async def ping(self) -> None:
        """Raises IndexUnavailable if the file cannot be read right now."""
        await self._fetch("SELECT 1", ())

    # --- writes ------------------------------------------------------------------------

    async def apply_batch(
        self, items: Sequence[tuple[ObjectEvent, KafkaPosition | None]]
    ) -> BatchResult:
        """See IndexStore.apply_batch: one IMMEDIATE transaction for the whole batch."""
        if not items:
            return BatchResult(0, 0, 0, 0)
        async with self._transaction() as conn:
            now = datetime.now(UTC)
            return await run_batch(_Writer(conn, now), items, now)

    async def prune_journal(self, older_than: datetime) -> int:
        """Delete journal entries with event_time before ``older_than``; their count."""
        async with (
            self._transaction() as conn,
            conn.execute(
                "DELETE FROM journal WHERE event_time < ?", (_text(older_than),)
            ) as cursor,
        ):
            return cursor.rowcount

    # --- reads -------------------------------------------------------------------------

    async def list_objects(self, query: ObjectQuery) -> list[ObjectRecord]:
        """See IndexStore.list_objects."""
        sql, params = listing_query(query, _DIALECT)
        return [_object_record(row) for row in await self._fetch(sql, params)]

    async def get_object(self, bucket: str, key: str, version_id: str = "") -> ObjectRecord | None:
        """The row of (bucket, key, version_id), tombstone or not; None if unknown."""
        rows = await self._fetch(
            f"SELECT {_LISTEDOBJECT_COLUMNS} FROM objects"  # noqa: S608 - constant fragments
            " WHERE bucket = ? AND key = ? AND version_id = ?",
            (bucket, key, version_id),
        )
        return _object_record(rows[0]) if rows else None

    async def usage(self, *, by: Literal["user", "bucket"]) -> list[UsageRow]:
        """See IndexStore.usage."""
        rows = await self._fetch(usage_query(by, _DIALECT), ())
        return [UsageRow(*row) for row in rows]

    async def put_transcript(self, transcript: Transcript) -> None:
        """See IndexStore.put_transcript (FTS5 follows through the table's triggers)."""
        async with self._transaction() as conn:
            await conn.execute(
                _PUT_TRANSCRIPT,
                (
                    transcript.bucket,
                    transcript.key,
                    transcript.version_id,
                    transcript.processor,
                    transcript.language,
                    transcript.text,
                    _text(datetime.now(UTC)),
                ),
            )

    async def growth(
        self, *, since: date, bucket: str | None = None, user_id: str | None = None
    ) -> list[GrowthRow]:
        """See IndexStore.growth. Times are stored as UTC text: the day is its prefix."""
        start = datetime.combine(since, time(), tzinfo=UTC)
        sql, params = growth_query(
            qmark, "substr(event_time, 1, 10)", _text(start), bucket=bucket, user_id=user_id
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
        sql, params = journal_query(qmark, bucket=bucket, key=key, kinds=kinds, limit=limit)
        rows = await self._fetch(sql, params)
        return [_journal_record(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """See IndexStore.counts."""
        (row,) = await self._fetch(_COUNTS, ())
        return {"objects": row[0], "tombstones": row[1], "journal": row[2]}

    # --- processing jobs -----------------------------------------------------------------

    async def claim_jobs(self, requests: Sequence[JobRequest], lease: Lease) -> Claims:
        """See IndexStore.claim_jobs. The write transaction excludes other claimers."""
        requests = latest_requests(requests)
        if not requests:
            return Claims(run=[])
        async with self._transaction() as conn:
            stored: dict[tuple[str, str, str, str], JobRecord] = {}
            for chunk in chunked([r.ident for r in requests], _ROWS_PER_STATEMENT):
                sql = _LOAD_JOBS.format(rows=", ".join(["(?, ?, ?, ?)"] * len(chunk)))
                for row in await conn.execute_fetchall(sql, [v for i in chunk for v in i]):
                    job = _job_record(row)
                    stored[job.ident] = job
            moment = datetime.now(UTC)
            claims = decide_claims(requests, stored, now=moment)
            now, expires = _text(moment), _text(lease.expires_at(moment))
            await conn.executemany(
                _PEND_JOB,
                [
                    (*r.ident, r.sequencer, r.etag, now, now, lease.owner, expires)
                    for r in claims.run
                ],
            )
            return claims

    async def start_job(self, request: JobRequest, owner: str) -> int:
        """See IndexStore.start_job."""
        now = _text(datetime.now(UTC))
        async with self._transaction() as conn:
            rows = await conn.execute_fetchall(
                _START_JOB, (now, now, *request.ident, request.sequencer, owner)
            )
        if not rows:
            raise LeaseLost(f"the lease of {'/'.join(request.ident)} went to another process")
        return int(next(iter(rows))[0])

    async def renew_leases(self, lease: Lease) -> int:
        """See IndexStore.renew_leases."""
        expires = _text(lease.expires_at(datetime.now(UTC)))
        async with self._transaction() as conn:
            cursor = await conn.execute(_RENEW_LEASES, (expires, lease.owner))
            return cursor.rowcount

    async def finish_job(self, request: JobRequest, outcome: JobOutcome, owner: str) -> bool:
        """See IndexStore.finish_job."""
        now = _text(datetime.now(UTC))
        async with self._transaction() as conn:
            cursor = await conn.execute(
                _FINISH_JOB,
                (
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
                ),
            )
            return cursor.rowcount > 0

    async def jobs(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        status: JobStatus | None = None,
        limit: int = 1000,
    ) -> list[JobRecord]:
        """See IndexStore.jobs."""
        sql, params = jobs_query(qmark, bucket=bucket, key=key, status=status, limit=limit)
        rows = await self._fetch(sql, params)
        return [_job_record(row) for row in rows]

    # --- plumbing ------------------------------------------------------------------------

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise IndexUnavailable(f"{self!r} is not started (call start() first)")
        return self._conn

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        async with self._lock:
            conn = self._connection()
            with _translated():
                return list(await conn.execute_fetchall(sql, params))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            conn = self._connection()
            with _translated():
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    await conn.execute("COMMIT")
                except BaseException:
                    await _rollback(conn)
                    raise


class _Writer:
    """The BatchWriter steps as SQLite statements, inside the batch's transaction."""

    def __init__(self, conn: aiosqlite.Connection, now: datetime) -> None:
        self._conn = conn
        self._now = _text(now)

    async def journal_new(self, items: Sequence[Item]) -> set[JournalId]:
        # One writer at a time (BEGIN IMMEDIATE), so the largest id stays ours to compare
        # with. The insert is one executemany; a redelivered event hits the conflict.
        rows = [self._journal_row(*item) for item in items]
        last = await self._conn.execute_fetchall(_LAST_JOURNAL_ID)
        cursor = await self._conn.executemany(_INSERT_JOURNAL, rows)
        identities = [journal_id(event) for event, _ in items]
        if cursor.rowcount == len(rows):  # the usual case: all of them were new
            return set(identities)
        # Some were journaled already: the new ones are those with a larger id.
        since = next(iter(last))[0]
        inserted: set[JournalId] = set()
        for statement, params in _multi_row(_JOURNALED_SINCE, identities):
            found = await self._conn.execute_fetchall(statement, [*params, since])
            inserted.update(tuple(row) for row in found)
        return inserted

    async def load_rows(
        self, rows: Collection[RowId], all_versions_of: Collection[tuple[str, str]]
    ) -> list[ObjectRecord]:
        found = await self._select(_LOAD_ROWS, list(rows))
        if all_versions_of:
            found += await self._select(_LOAD_ALL_VERSIONS, list(all_versions_of))
        return [_object_record(row) for row in found]

    async def save_rows(self, rows: Sequence[ObjectRecord]) -> None:
        await self._conn.executemany(_SAVE_ROW, [_object_row(row) for row in rows])
        # What was said in a removed version is not searchable any more.
        gone = [(row.bucket, row.key, row.version_id) for row in rows if row.is_gone]
        if gone:
            await self._conn.executemany(_DROP_TRANSCRIPTS, gone)

    async def _select(self, template: str, keys: Sequence[tuple[str, ...]]) -> list[Any]:
        """Rows of ``template`` joined to ``keys`` (a VALUES list), in slices."""
        found: list[Any] = []
        for statement, params in _multi_row(template, keys):
            found += await self._conn.execute_fetchall(statement, params)
        return found

    def _journal_row(
        self, event: ObjectEvent, position: KafkaPosition | None
    ) -> tuple[object, ...]:
        return (*journal_values(event, position, _text(event.event_time)), self._now)


# --- helpers ---------------------------------------------------------------------------


def _multi_row(
    template: str, rows: Sequence[Sequence[object]]
) -> Iterator[tuple[str, list[object]]]:
    """``template`` with its ``{rows}`` a VALUES list, and the parameters, in slices of
    ``_VALUES_ROWS`` rows (fewer where SQLite's parameter limit is lower)."""
    if not rows:
        return
    width = len(rows[0])
    marks = "(" + ", ".join("?" * width) + ")"
    for chunk in chunked(rows, max(1, min(_VALUES_ROWS, _MAX_PARAMETERS // width))):
        yield template.format(rows=", ".join([marks] * len(chunk))), [v for r in chunk for v in r]


async def _configure(conn: aiosqlite.Connection) -> None:
    await _ensure_wal(conn)
    await conn.execute("PRAGMA synchronous = FULL")
    # LIKE is ASCII-case-insensitive by default; S3 keys are case-sensitive.
    await conn.execute("PRAGMA case_sensitive_like = ON")
    # 32 MiB of page cache instead of 2: a batch's journal and object index entries land on
    # random pages (keys are UUIDs), and with 2 MiB most of them were read back from the
    # file. Pages are cached as they are touched, so a short CLI read stays small.
    await conn.execute("PRAGMA cache_size = -32768")
    # Checkpoint the WAL into the main file every ~40 MiB instead of every ~4 MiB: a batch
    # of 2,000 events writes more than 1,000 pages, so at SQLite's default every commit
    # also ran a checkpoint (copying and fsyncing the file); less often, a page written by
    # several batches is copied once. About an eighth off each batch's write (measured
    # in-process, docs/benchmarks.md); readers keep working meanwhile (WAL).
    await conn.execute("PRAGMA wal_autocheckpoint = 10000")


async def _ensure_wal(conn: aiosqlite.Connection, attempts: int = 50) -> None:
    """Switch the file to WAL (persistent, so usually already done).

    The switch needs an exclusive lock and SQLite answers SQLITE_BUSY at once, without the
    busy handler, when another connection is opening the same new file: retry briefly.
    """
    for attempt in range(attempts):
        async with conn.execute("PRAGMA journal_mode") as cursor:
            row = await cursor.fetchone()
        if row is not None and str(row[0]).lower() == "wal":
            return
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.02 * (attempt + 1))


async def _rollback(conn: aiosqlite.Connection) -> None:
    # SQLite may already have rolled back (e.g. after SQLITE_FULL); nothing to undo then.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")


@contextmanager
def _translated() -> Iterator[None]:
    """Turn sqlite3/OS errors into IndexUnavailable (retriable) or IndexWriteFailed."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _TRANSIENT_CODES:
            raise IndexUnavailable(f"SQLite index unavailable: {exc}") from exc
        raise IndexWriteFailed(f"SQLite index error: {exc}") from exc
    except OSError as exc:
        raise IndexUnavailable(f"SQLite index unavailable: {exc}") from exc


def _add_metadata(where: Conditions, metadata: dict[str, str]) -> None:
    for name, value in metadata.items():
        where.add(
            "EXISTS (SELECT 1 FROM json_each(objects.user_metadata) AS m"
            " WHERE m.key = {} AND m.type = 'text' AND m.value = {})",
            name,
            value,
        )


def _json(metadata: Mapping[str, str]) -> str:
    return canonical_json(dict(metadata))


def _object_row(record: ObjectRecord) -> tuple[object, ...]:
    """``record`` as parameters in ``OBJECT_COLUMNS`` order."""
    return (
        record.bucket,
        record.key,
        record.version_id,
        record.size,
        record.etag,
        record.content_type,
        record.user_id,
        _json(record.metadata),
        _text(record.first_event_time),
        _text(record.last_event_time),
        record.sequencer,
        _text(record.indexed_at),
        int(record.deleted),
        record.last_event_name,
        None if record.deleted_at is None else _text(record.deleted_at),
    )


@functools.lru_cache(maxsize=8192)
def _text(moment: datetime) -> str:
    # Cached: a batch writes each event's time up to four times (journal, first and last
    # event time, deleted_at) and its indexed_at on every row. Most moments are UTC
    # already (events, now()): astimezone would only copy them.
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _text_of(moment: datetime) -> object:
    return _text(moment)


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _object_record(row: Any) -> ObjectRecord:
    return ObjectRecord(
        bucket=row[0],
        key=row[1],
        version_id=row[2],
        size=row[3],
        etag=row[4],
        content_type=row[5],
        user_id=row[6],
        metadata=json.loads(row[7]),
        first_event_time=datetime.fromisoformat(row[8]),
        last_event_time=datetime.fromisoformat(row[9]),
        sequencer=row[10],
        indexed_at=datetime.fromisoformat(row[11]),
        deleted=bool(row[12]),
        last_event_name=row[13],
        deleted_at=_time(row[14]),
        processing_status=row[15] if len(row) > 15 else None,
        is_latest=bool(row[16]) if len(row) > 16 else None,
        snippet=row[17] if len(row) > 17 else None,
    )


def _job_record(row: Any) -> JobRecord:
    return JobRecord(
        bucket=row[0],
        key=row[1],
        version_id=row[2],
        processor=row[3],
        sequencer=row[4],
        etag=row[5],
        status=JobStatus(row[6]),
        attempts=row[7],
        last_error=row[8],
        result_bucket=row[9],
        result_key=row[10],
        created_at=datetime.fromisoformat(row[11]),
        started_at=_time(row[12]),
        finished_at=_time(row[13]),
        duration_ms=row[14],
        updated_at=datetime.fromisoformat(row[15]),
        lease_owner=row[16],
        lease_expires_at=_time(row[17]),
    )


def _journal_record(row: Any) -> JournalRecord:
    topic, partition, offset = row[14], row[15], row[16]
    return JournalRecord(
        id=row[0],
        bucket=row[1],
        key=row[2],
        version_id=row[3],
        event_name=row[4],
        kind=EventKind(row[5]),
        event_time=datetime.fromisoformat(row[6]),
        sequencer=row[7],
        principal_id=row[8],
        source_ip=row[9],
        user_agent=row[10],
        request_id=row[11],
        size=row[12],
        etag=row[13],
        kafka=KafkaPosition(topic, partition, offset) if topic is not None else None,
        recorded_at=datetime.fromisoformat(row[17]),
    )


_DIALECT: Final = Dialect(
    placeholder=qmark,
    is_deleted="deleted = 1",
    is_live="deleted = 0",
    add_metadata=_add_metadata,
    moment=_text_of,
    text_hits=_TEXT_HITS,
    text_query=fts5_query,
)
