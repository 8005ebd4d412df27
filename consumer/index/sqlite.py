"""The embedded index: one SQLite file, WAL mode, one connection per process.

WAL lets readers (the CLI) work while the indexer writes. Every write transaction starts
with BEGIN IMMEDIATE so a second writer waits up to ``busy_timeout_s`` for the lock rather
than failing half-way when a read lock cannot be upgraded. ``synchronous=FULL`` because
Kafka offsets are committed after ``apply_batch`` returns: a transaction lost in a power
cut would be an event lost for good.

Times are stored as ISO-8601 UTC text with microseconds (fixed width, so text order is
time order); booleans as 0/1; user metadata as JSON text.

The operations are ``SqlIndex``'s, written once for both backends; this module holds only
what is SQLite's own: the connection and its transactions, error translation, the dialect
(``?`` placeholders, times as text, ``json_each`` metadata, FTS5 search) and the
statements whose rows travel as VALUES lists (the batch's ``_Writer``, job claims).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import sys
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import aiosqlite

from consumer.errors import IndexUnavailable, IndexWriteFailed
from consumer.events import ObjectEvent
from consumer.index.decisions import canonical_json, journal_id, run_batch
from consumer.index.migrations import migrate_sqlite
from consumer.index.records import (
    BatchResult,
    Item,
    JobRequest,
    JournalId,
    KafkaPosition,
    Lease,
    ObjectRecord,
    RowId,
    Transcript,
)
from consumer.index.sql import (
    JOB_COLUMNS,
    JOB_PEND_UPSERT,
    OBJECT_COLUMNS,
    OBJECT_UPSERT,
    Conditions,
    Dialect,
    RowReader,
    chunked,
    fts5_query,
    journal_values,
    qmark,
)
from consumer.index.sql_index import SqlIndex
from consumer.index.store import BatchWriter

# Primary result codes (the low byte of extended codes) that mean "try again later".
_TRANSIENT_CODES: Final = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR}
)


# The batch's statements are multi-row ("VALUES {rows}", filled by ``_multi_row``), not
# executemany: executemany steps once per row, and each step hands the GIL away and back;
# while the event loop's thread runs Python (decoding the next batch), every hand-back
# waits out a switch interval. Measured with prebuilt rows beside one busy Python thread,
# per event: executemany 4.5 ms; multi-row statements 68 µs, and 23 µs with the shorter
# switch interval below.
_INSERT_JOURNAL: Final = """
INSERT INTO journal (bucket, key, version_id, event_name, kind, event_time, sequencer,
                     principal_id, source_ip, user_agent, request_id, size, etag,
                     kafka_topic, kafka_partition, kafka_offset, recorded_at)
VALUES {rows}
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
# Rows per such statement at most: each distinct size is compiled (and cached) on its own,
# so slices are a power of two (see ``_multi_row``); under the 999-parameter limit of
# SQLite before 3.32 as well.
_MAX_PARAMETERS: Final = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_VALUES_ROWS: Final = 512
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

_SAVE_ROWS: Final = (
    f"""
INSERT INTO objects ({OBJECT_COLUMNS})
VALUES {{rows}}"""  # noqa: S608 - constant fragments
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

# FTS5 follows the table through its triggers.
_PUT_TRANSCRIPT: Final = """
INSERT INTO transcripts (bucket, key, version_id, processor, language, text, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (bucket, key, version_id, processor) DO UPDATE SET
    language = excluded.language, text = excluded.text, updated_at = excluded.updated_at"""

# By id through the join: "(bucket, key, version_id) IN (VALUES …)" scans the table.
_DROP_TRANSCRIPTS: Final = """
DELETE FROM transcripts WHERE id IN (
    SELECT t.id FROM (VALUES {rows}) AS v
    JOIN transcripts AS t ON t.bucket = v.column1 AND t.key = v.column2
                         AND t.version_id = v.column3)"""

# The hits of an FTS5 match, one per transcript; the snippet marks hits in [brackets].
_TEXT_HITS: Final = (
    "SELECT t.bucket AS hit_bucket, t.key AS hit_key, t.version_id AS hit_version,"
    " snippet(transcripts_fts, 0, '[', ']', '…', 16) AS snippet"
    " FROM transcripts_fts JOIN transcripts AS t ON t.id = transcripts_fts.rowid"
    " WHERE transcripts_fts MATCH {0}"
)


def _add_metadata(where: Conditions, metadata: dict[str, str]) -> None:
    for name, value in metadata.items():
        where.add(
            "EXISTS (SELECT 1 FROM json_each(objects.user_metadata) AS m"
            " WHERE m.key = {} AND m.type = 'text' AND m.value = {})",
            name,
            value,
        )


def _text_of(moment: datetime) -> object:
    return _text(moment)


_DIALECT: Final = Dialect(
    placeholder=qmark,
    is_deleted="deleted = 1",
    is_live="deleted = 0",
    add_metadata=_add_metadata,
    moment=_text_of,
    text_hits=_TEXT_HITS,
    text_query=fts5_query,
)

_READER: Final = RowReader(time=datetime.fromisoformat, metadata=json.loads)
_object_record: Final = _READER.object_record  # the name _Writer reads rows by


class SqliteIndex(SqlIndex[aiosqlite.Connection, aiosqlite.Connection]):
    """IndexStore on one SQLite file. Operations of one instance are serialised.

    ``busy_timeout_s``: how long a write waits for another process's lock before
    IndexUnavailable is raised.
    """

    db_system = "sqlite"
    dialect = _DIALECT
    row_reader = _READER
    event_day = "substr(event_time, 1, 10)"  # times are stored as UTC text: its prefix
    put_transcript_sql = _PUT_TRANSCRIPT

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        super().__init__()
        self._path = Path(path)
        self._busy_timeout_s = busy_timeout_s

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"SqliteIndex({str(self._path)!r})"

    # --- the connection: one, taken in turns (``_lock``) --------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn sqlite3/OS errors into IndexUnavailable (retriable) or IndexWriteFailed."""
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
                # Retried, like an outage: the batch is not committed, and it is written
                # once space is freed (nothing else could make this write succeed).
                raise IndexUnavailable(
                    f"SQLite index cannot grow: {exc} (free space where {self._path} lives)"
                ) from exc
            if code is not None and code & 0xFF in _TRANSIENT_CODES:
                raise IndexUnavailable(f"SQLite index unavailable: {exc}") from exc
            raise IndexWriteFailed(f"SQLite index error: {exc}") from exc
        except OSError as exc:
            raise IndexUnavailable(f"SQLite index unavailable: {exc}") from exc

    async def _open(self) -> aiosqlite.Connection:
        await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)
        return await aiosqlite.connect(
            self._path, timeout=self._busy_timeout_s, isolation_level=None
        )

    async def _prepare(self, handle: aiosqlite.Connection) -> None:
        await _configure(handle)
        await migrate_sqlite(handle)

    async def _release(self, handle: aiosqlite.Connection) -> None:
        await handle.close()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            conn = self._started()
            with self._translated():
                yield conn

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[aiosqlite.Connection]:
        # IMMEDIATE: the file's write lock first, so a second writer waits busy_timeout_s
        # for it rather than failing half-way when its read lock cannot be upgraded.
        async with self._lock:
            conn = self._started()
            with self._translated():
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    await conn.execute("COMMIT")
                except BaseException:
                    await _rollback(conn)
                    raise

    def _exclusive(
        self, objects: Iterable[tuple[str, str]]
    ) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        # Every write transaction holds the file's one write lock: no other writer at all.
        return self._writing()

    async def _rows(
        self, conn: aiosqlite.Connection, sql: str, params: Sequence[object]
    ) -> list[Any]:
        return list(await conn.execute_fetchall(sql, params))

    async def _execute(self, conn: aiosqlite.Connection, sql: str, params: Sequence[object]) -> int:
        async with conn.execute(sql, params) as cursor:
            return cursor.rowcount

    async def _clock(self, conn: aiosqlite.Connection) -> datetime:
        return datetime.now(UTC)  # the processes sharing a file share this host's clock

    # --- the steps whose rows travel as VALUES lists -----------------------------------

    def _writer(self, conn: aiosqlite.Connection, now: datetime) -> BatchWriter:
        return _Writer(conn._conn, now)

    async def _apply(self, items: Sequence[Item], now: datetime) -> BatchResult:
        # The whole transaction in aiosqlite's thread, in one hop: BEGIN, the batch's
        # Python (planning, rows) between its statements, COMMIT. The event loop's thread
        # stays free to fetch and decode the next batch the whole time, and the write never
        # waits for it: with BEGIN and COMMIT as hops of their own, each waited until the
        # event loop finished decoding a batch before it was even sent to the thread.
        # aiosqlite has no public call for "run this function in the connection's thread";
        # ``_execute`` is the one all its own calls go through.
        async with self._lock:
            conn = self._started()
            with self._translated():
                batch = run_batch(self._writer(conn, now), items, now)
                run_in_thread: Callable[..., Awaitable[BatchResult]] = conn._execute
                return await run_in_thread(_committed, conn._conn, batch)

    async def _stored_jobs(
        self, conn: aiosqlite.Connection, idents: Sequence[tuple[str, str, str, str]]
    ) -> list[Any]:
        found: list[Any] = []
        for chunk in chunked(idents, _ROWS_PER_STATEMENT):
            sql = _LOAD_JOBS.format(rows=", ".join(["(?, ?, ?, ?)"] * len(chunk)))
            found += await conn.execute_fetchall(sql, [v for i in chunk for v in i])
        return found

    async def _pend_jobs(
        self, conn: aiosqlite.Connection, jobs: Sequence[JobRequest], now: datetime, lease: Lease
    ) -> None:
        since, expires = _text(now), _text(lease.expires_at(now))
        await conn.executemany(
            _PEND_JOB,
            [(*r.ident, r.sequencer, r.etag, since, since, lease.owner, expires) for r in jobs],
        )

    def _transcript_values(self, transcript: Transcript) -> tuple[object, ...]:
        return (
            transcript.bucket,
            transcript.key,
            transcript.version_id,
            transcript.processor,
            transcript.language,
            transcript.text,
        )


class _Writer:
    """The BatchWriter steps as SQLite statements, inside the batch's transaction.

    On the plain sqlite3 connection, in aiosqlite's thread (see ``SqliteIndex._apply``):
    its methods are coroutines only to fit ``run_batch``; none of them ever suspends.
    """

    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        self._conn = conn
        self._now = _text(now)

    async def journal_new(self, items: Sequence[Item]) -> set[JournalId]:
        # One writer at a time (BEGIN IMMEDIATE), so the largest id stays ours to compare
        # with. A redelivered event hits the conflict.
        rows = [self._journal_row(*item) for item in items]
        last = self._conn.execute(_LAST_JOURNAL_ID).fetchall()
        added = self._run(_INSERT_JOURNAL, rows)
        identities = [journal_id(event) for event, _ in items]
        if added == len(rows):  # the usual case: all of them were new
            return set(identities)
        # Some were journaled already: the new ones are those with a larger id.
        since = next(iter(last))[0]
        inserted: set[JournalId] = set()
        for statement, params in _multi_row(_JOURNALED_SINCE, identities):
            found = self._conn.execute(statement, [*params, since]).fetchall()
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
        self._run(_SAVE_ROWS, [_object_row(row) for row in rows])
        # What was said in a removed version is not searchable any more.
        gone = [(row.bucket, row.key, row.version_id) for row in rows if row.is_gone]
        self._run(_DROP_TRANSCRIPTS, gone)

    def _run(self, template: str, rows: Sequence[Sequence[object]]) -> int:
        """Run ``template`` over ``rows`` (multi-row slices); the rows it changed."""
        changed = 0
        for statement, params in _multi_row(template, rows):
            changed += self._conn.execute(statement, params).rowcount
        return changed

    async def _select(self, template: str, keys: Sequence[tuple[str, ...]]) -> list[Any]:
        """Rows of ``template`` joined to ``keys`` (a VALUES list), in slices."""
        found: list[Any] = []
        for statement, params in _multi_row(template, keys):
            found += self._conn.execute(statement, params).fetchall()
        return found

    def _journal_row(
        self, event: ObjectEvent, position: KafkaPosition | None
    ) -> tuple[object, ...]:
        return (*journal_values(event, position, _text(event.event_time)), self._now)


# --- helpers ---------------------------------------------------------------------------


def _committed(conn: sqlite3.Connection, batch: Coroutine[Any, Any, BatchResult]) -> BatchResult:
    """``batch`` run to completion in one write transaction of ``conn``, in this thread."""
    try:
        conn.execute("BEGIN IMMEDIATE")  # see SqliteIndex._writing
    except BaseException:
        batch.close()
        raise
    try:
        result = _completed(batch)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def _completed(batch: Coroutine[Any, Any, BatchResult]) -> BatchResult:
    """The result of a coroutine that never suspends (run_batch over ``_Writer``)."""
    try:
        batch.send(None)
    except StopIteration as done:
        return cast(BatchResult, done.value)
    batch.close()
    raise RuntimeError("the SQLite batch writer suspended; it must run to completion")


def _multi_row(
    template: str, rows: Sequence[Sequence[object]]
) -> Iterator[tuple[str, list[object]]]:
    """``template`` with its ``{rows}`` a VALUES list, and the parameters, in slices of
    ``_VALUES_ROWS`` rows (fewer where SQLite's parameter limit is lower) and the rest in
    power-of-two slices: a handful of distinct statements whatever the batch's size, so
    each is compiled once and then found in the connection's statement cache."""
    if not rows:
        return
    width = len(rows[0])
    marks = "(" + ", ".join("?" * width) + ")"
    start = 0
    for size in _slice_sizes(len(rows), min(_VALUES_ROWS, _MAX_PARAMETERS // width)):
        chunk = rows[start : start + size]
        start += size
        yield template.format(rows=", ".join([marks] * size)), [v for r in chunk for v in r]


def _slice_sizes(count: int, largest: int) -> list[int]:
    """Slices of ``count`` rows: as many of the largest power of two up to ``largest`` as
    fit, then the binary digits of the rest (2,000 in slices of 512: 512, 512, 512, 256,
    128, 64, 16)."""
    full = 1 << (max(1, largest).bit_length() - 1)
    sizes = [full] * (count // full)
    rest = count % full
    sizes += [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]
    return sizes


# The longest a thread that wants the GIL waits before the running one must hand it over
# (Python's default: 5 ms). The connection's thread gives the GIL away for each step of a
# statement and wants it back right after; while the event loop's thread runs Python,
# every such step waited up to the interval. Multi-row statements make those steps few;
# a shorter interval makes each wait short (measured beside a busy Python thread: a
# 2,000-event batch 2.9x faster at 0.5 ms than at 5 ms). Process-wide, only ever lowered.
_GIL_SWITCH_INTERVAL_S: Final = 0.0005


def _hand_the_gil_over_promptly() -> None:
    if sys.getswitchinterval() > _GIL_SWITCH_INTERVAL_S:
        sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)


async def _configure(conn: aiosqlite.Connection) -> None:
    _hand_the_gil_over_promptly()
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
