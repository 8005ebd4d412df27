"""The embedded index: one SQLite file, WAL mode, one connection per process for its
statements, used by one thread of its own.

Every statement runs in that thread (``_Connection``: plain sqlite3 and a one-thread
executor): the event loop never waits on the file, and a batch's whole transaction (its
Python planning between the statements too) is one hop, so the loop decodes the next
batch meanwhile. WAL lets readers (the CLI) work while the indexer writes; once a
process has written, a thread of its own copies the WAL into the file on a second
connection (``wal_checkpoints``), so the writer never stops for that. Every write
transaction starts with BEGIN IMMEDIATE so a second writer waits up to ``busy_timeout_s``
for the lock rather than failing half-way when a read lock cannot be upgraded.
``synchronous=FULL`` because Kafka offsets are committed after ``apply_batch`` returns: a
transaction lost in a power cut would be an event lost for good.

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
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from consumer.errors import IndexUnavailable, IndexWriteFailed
from consumer.index.decisions import JobStart, canonical_json, row_id, run_batch
from consumer.index.migrations import SQLITE_OTHER_USER_ROWS, migrate_sqlite
from consumer.index.records import (
    BatchResult,
    Item,
    Lease,
    ObjectRow,
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
from consumer.index.threads import hand_the_gil_over_promptly
from consumer.index.wal_checkpoints import WalCheckpointer

T = TypeVar("T")

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
#
# The journal's entries get their ids here (one writer at a time: BEGIN IMMEDIATE), so
# that each can point to the previous entry of its (bucket, key, version) in the same
# statement. AUTOINCREMENT's high-water mark, not max(id): a pruned id is never reused.
_NEXT_JOURNAL_ID: Final = (
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'journal'), 0) + 1"
)
_INSERT_JOURNAL: Final = """
INSERT INTO journal (id, bucket, key, version_id, event_name, kind, event_time, sequencer,
                     principal_id, source_ip, user_agent, request_id, size, etag,
                     kafka_topic, kafka_partition, kafka_offset, recorded_at, prev_id)
VALUES {rows}"""
# The events of a batch journaled already (redeliveries), by the identity index: led by
# the sequencer, so the lookups of a batch land on a few recent pages.
_JOURNALED: Final = """
SELECT j.sequencer, j.bucket, j.key, j.version_id, j.event_name
FROM (VALUES {rows}) AS v
JOIN journal AS j ON j.sequencer = v.column1 AND j.bucket = v.column2 AND j.key = v.column3
                 AND j.version_id = v.column4 AND j.event_name = v.column5"""
# Rows per such statement at most: each distinct size is compiled (and cached) on its own,
# so slices are a power of two (see ``_multi_row``); under the 999-parameter limit of
# SQLite before 3.32 as well.
_MAX_PARAMETERS: Final = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_VALUES_ROWS: Final = 512
# Job claims keep their historical slices (a few rows at a time anyway).
_ROWS_PER_STATEMENT: Final = 150
# A row as stored, then the head of its journal chain (last_journal_id). Column names are
# unqualified: the VALUES side only has column1, column2, ...
_STORED_COLUMNS: Final = f"{OBJECT_COLUMNS}, last_journal_id"
_HEAD: Final = 15  # the position of last_journal_id in such a row
_LOAD_ROWS: Final = (
    f"SELECT {_STORED_COLUMNS} FROM (VALUES {{rows}}) AS v"  # noqa: S608 - constant fragments
    " JOIN objects ON bucket = v.column1 AND key = v.column2 AND version_id = v.column3"
)
_LOAD_ALL_VERSIONS: Final = (
    f"SELECT {_STORED_COLUMNS} FROM (VALUES {{rows}}) AS v"  # noqa: S608 - constant fragments
    " JOIN objects ON bucket = v.column1 AND key = v.column2"
)
_LOAD_HEADS: Final = """
SELECT h.bucket, h.key, h.version_id, h.last_journal_id FROM (VALUES {rows}) AS v
JOIN journal_heads AS h ON h.bucket = v.column1 AND h.key = v.column2
                       AND h.version_id = v.column3"""

_SAVE_ROWS: Final = (
    f"""
INSERT INTO objects ({_STORED_COLUMNS})
VALUES {{rows}}"""  # noqa: S608 - constant fragments
    + OBJECT_UPSERT
    + ",\n    last_journal_id = excluded.last_journal_id"
)

# The head of a version that has no objects row (an event that only goes to the journal).
_SAVE_HEADS: Final = """
INSERT INTO journal_heads (bucket, key, version_id, last_journal_id) VALUES {rows}
ON CONFLICT (bucket, key, version_id) DO UPDATE SET last_journal_id = excluded.last_journal_id"""
# A version whose every entry was pruned has no history left to point to.
_DROP_PRUNED_HEADS: Final = (
    "DELETE FROM journal_heads WHERE NOT EXISTS (SELECT 1 FROM journal WHERE id = last_journal_id)"
)
_DROP_HEAD: Final = "DELETE FROM journal_heads WHERE bucket = ? AND key = ? AND version_id = ?"

_LOAD_JOBS: Final = (
    f"SELECT {JOB_COLUMNS} FROM (VALUES {{rows}}) AS v"  # noqa: S608 - constant fragments
    " JOIN jobs ON bucket = v.column1 AND key = v.column2 AND version_id = v.column3"
    " AND processor = v.column4"
)

_PEND_JOB: Final = (
    """
INSERT INTO jobs (bucket, key, version_id, processor, sequencer, etag, status, attempts,
                  last_error, created_at, updated_at, lease_owner, lease_expires_at)
VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)"""
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


# One key's journal along its chains: from the head of each version (its objects row,
# or journal_heads) back through prev_id. UNION: a version whose head moved from
# journal_heads to its objects row has both, on one chain.
_KEY_HISTORY: Final = """id IN (
    WITH RECURSIVE chain(id) AS (
        SELECT last_journal_id FROM objects
        WHERE bucket = {} AND key = {} AND last_journal_id IS NOT NULL
        UNION SELECT last_journal_id FROM journal_heads WHERE bucket = {} AND key = {}
        UNION SELECT j.prev_id FROM chain JOIN journal AS j ON j.id = chain.id
        WHERE j.prev_id IS NOT NULL
    )
    SELECT id FROM chain)"""


def _add_key_history(where: Conditions, bucket: str, key: str) -> None:
    where.add(_KEY_HISTORY, bucket, key, bucket, key)


# The rows a user may own: their own folder (``user_<id>/…``) by primary-key ranges, one
# per bucket (the buckets found by skipping through the key), and the others by the
# partial index of them. The listing filters by user_id on top, and sorts what is found.
_OWNED_ROWS: Final = (
    "WITH RECURSIVE buckets(name) AS ("  # noqa: S608 - constant fragments
    " SELECT min(bucket) FROM objects UNION ALL"
    " SELECT (SELECT min(bucket) FROM objects WHERE bucket > buckets.name)"
    " FROM buckets WHERE buckets.name IS NOT NULL)"
    " SELECT o.* FROM buckets JOIN objects AS o"
    " ON o.bucket = buckets.name AND o.key >= ? AND o.key < ?"
    f" UNION ALL SELECT * FROM objects WHERE user_id = ? AND {SQLITE_OTHER_USER_ROWS}"
)


def _owned_rows(user_id: str) -> tuple[str, list[object]]:
    return _OWNED_ROWS, [f"user_{user_id}/", f"user_{user_id}0", user_id]


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
    owned_rows=_owned_rows,
    add_key_history=_add_key_history,
    moment=_text_of,
    text_hits=_TEXT_HITS,
    text_query=fts5_query,
)

_READER: Final = RowReader(time=datetime.fromisoformat, metadata=json.loads)
_object_row_of: Final = _READER.object_row  # the name _Writer reads rows by


class _Connection:
    """The index's one sqlite3 connection and the one thread that uses it.

    Every call on the connection runs in that thread, in the order it was made: a
    one-thread executor is a queue, so an operation a cancelled caller left running
    finishes before the next one starts (and a ROLLBACK sent after it runs after it).
    """

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection, path: Path) -> None:
        self._executor = executor
        self.conn = conn
        self._checkpointer = WalCheckpointer(path)

    @classmethod
    async def open(cls, path: Path, busy_timeout_s: float) -> _Connection:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-index")
        try:
            conn = await _in(executor, _connect, path, busy_timeout_s)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn, path)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(connection, *args)`` in the connection's thread."""
        return await _in(self._executor, function, self.conn, *args)

    async def commit(self, function: Callable[..., T], *args: Any) -> T:
        """``call`` of a function that commits a transaction: the WAL checkpointer is
        nudged right after it, from the connection's thread (not once the event loop gets
        round to it)."""
        return await _in(self._executor, self._nudging, function, *args)

    async def close(self) -> None:
        try:
            await _in(self._executor, self._checkpointer.stop)
            await self.call(sqlite3.Connection.close)
        finally:
            self._executor.shutdown(wait=False)

    def _nudging(self, function: Callable[..., T], *args: Any) -> T:
        result = function(self.conn, *args)
        self._checkpointer.nudge()  # only once committed: a rollback added nothing to copy
        return result

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction


async def _in(executor: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(function, *args)
    )


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit (isolation_level=None): transactions are the explicit BEGIN … COMMIT below.
    # Made in the connection's thread and only ever used there (see _Connection).
    return sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _row_count(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> int:
    return conn.execute(sql, params).rowcount


def _execute_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[object]]) -> None:
    conn.executemany(sql, rows)


class SqliteIndex(SqlIndex[_Connection, _Connection]):
    """IndexStore on one SQLite file. Operations of one instance are serialised.

    ``busy_timeout_s``: how long a write waits for another process's lock before
    IndexUnavailable is raised.
    """

    db_system = "sqlite"
    dialect = _DIALECT
    row_reader = _READER
    event_day = "substr(event_time, 1, 10)"  # times are stored as UTC text: its prefix
    put_transcript_sql = _PUT_TRANSCRIPT
    after_prune = _DROP_PRUNED_HEADS

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

    async def _open(self) -> _Connection:
        return await _Connection.open(self._path, self._busy_timeout_s)

    async def _prepare(self, handle: _Connection) -> None:
        await handle.call(_configure)
        await handle.call(migrate_sqlite)

    async def _release(self, handle: _Connection) -> None:
        await handle.close()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[_Connection]:
        async with self._lock:
            conn = self._started()
            with self._translated():
                yield conn

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[_Connection]:
        # IMMEDIATE: the file's write lock first, so a second writer waits busy_timeout_s
        # for it rather than failing half-way when its read lock cannot be upgraded.
        async with self._lock:
            conn = self._started()
            with self._translated():
                await conn.call(_row_count, "BEGIN IMMEDIATE", ())
                try:
                    yield conn
                    await conn.commit(_row_count, "COMMIT", ())
                except BaseException:
                    await conn.call(_rollback)
                    raise

    def _exclusive(
        self, objects: Iterable[tuple[str, str]]
    ) -> AbstractAsyncContextManager[_Connection]:
        # Every write transaction holds the file's one write lock: no other writer at all.
        return self._writing()

    async def _rows(self, conn: _Connection, sql: str, params: Sequence[object]) -> list[Any]:
        return await conn.call(_fetch_all, sql, params)

    async def _execute(self, conn: _Connection, sql: str, params: Sequence[object]) -> int:
        return await conn.call(_row_count, sql, params)

    async def _clock(self, conn: _Connection) -> datetime:
        return datetime.now(UTC)  # the processes sharing a file share this host's clock

    # --- the steps whose rows travel as VALUES lists -----------------------------------

    def _writer(self, conn: _Connection, now: datetime) -> BatchWriter:
        return _Writer(conn.conn, now)

    async def _apply(self, items: Sequence[Item], now: datetime) -> BatchResult:
        # The whole transaction in the connection's thread, in one hop: BEGIN, the batch's
        # Python (planning, rows) between its statements, COMMIT. The event loop's thread
        # stays free to fetch and decode the next batch the whole time, and the write never
        # waits for it: with BEGIN and COMMIT as hops of their own, each waited until the
        # event loop finished decoding a batch before it was even sent to the thread.
        async with self._lock:
            conn = self._started()
            with self._translated():
                return await conn.commit(_apply_batch, items, now)

    async def _stored_jobs(
        self, conn: _Connection, idents: Sequence[tuple[str, str, str, str]]
    ) -> list[Any]:
        found: list[Any] = []
        for chunk in chunked(idents, _ROWS_PER_STATEMENT):
            sql = _LOAD_JOBS.format(rows=", ".join(["(?, ?, ?, ?)"] * len(chunk)))
            found += await conn.call(_fetch_all, sql, [v for i in chunk for v in i])
        return found

    async def _pend_jobs(
        self, conn: _Connection, jobs: Sequence[JobStart], now: datetime, lease: Lease
    ) -> None:
        since, expires = _text(now), _text(lease.expires_at(now))
        await conn.call(
            _execute_many,
            _PEND_JOB,
            [
                (*r.ident, r.sequencer, r.etag, attempts, error, since, since, lease.owner, expires)
                for r, attempts, error in jobs
            ],
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

    On the plain sqlite3 connection, in its thread (see ``SqliteIndex._apply``): its
    methods are coroutines only to fit ``run_batch``; none of them ever suspends.

    Besides the rows, it keeps every journaled version's chain: the entries it journals
    point to the version's head before them, and the head ends on the last one — in the
    objects row when the version has one (saved with it, or by ``link_heads``), in
    ``journal_heads`` when it has none.
    """

    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        self._conn = conn
        self._now = _text(now)
        self._stored: dict[RowId, Sequence[Any]] = {}  # rows as loaded (_STORED_COLUMNS)
        self._heads: dict[RowId, int] = {}  # the last entry this batch journaled, per row
        self._saved: set[RowId] = set()
        self._headed: set[RowId] = set()  # versions whose head was in journal_heads

    async def journal_new(self, items: Sequence[Item]) -> list[Item]:
        identities = [(e.sequencer, e.bucket, e.key, e.version_id, e.event_name) for e, _ in items]
        known = {tuple(row) for row in self._select(_JOURNALED, identities)}
        new = [item for item, ident in zip(items, identities, strict=True) if ident not in known]
        if not new:
            return []
        heads = self._load_heads(list(dict.fromkeys(row_id(event) for event, _ in new)))
        first = self._conn.execute(_NEXT_JOURNAL_ID).fetchone()[0]
        rows = []
        now = self._now
        for number, (event, position) in enumerate(new, start=first):
            rid = (event.bucket, event.key, event.version_id)
            values = journal_values(event, position, _text(event.event_time))
            rows.append((number, *values, now, heads.get(rid)))
            heads[rid] = self._heads[rid] = number
        self._run(_INSERT_JOURNAL, rows)
        return new

    async def load_rows(
        self, rows: Collection[RowId], all_versions_of: Collection[tuple[str, str]]
    ) -> list[ObjectRow]:
        # Every row of ``rows`` was loaded by journal_new (only new events change rows).
        found = [self._stored[rid] for rid in rows if rid in self._stored]
        if all_versions_of:
            for row in self._select(_LOAD_ALL_VERSIONS, list(all_versions_of)):
                rid = (row[0], row[1], row[2])
                if rid not in rows:
                    self._stored[rid] = row
                    found.append(row)
        return [_object_row_of(row) for row in found]

    async def save_rows(self, rows: Sequence[ObjectRow]) -> None:
        values = []
        for row in rows:
            rid = (row.bucket, row.key, row.version_id)
            values.append((*_stored_values(row), self._head(rid)))
            self._saved.add(rid)
        self._run(_SAVE_ROWS, values)
        # What was said in a removed version is not searchable any more.
        gone = [(row.bucket, row.key, row.version_id) for row in rows if row.is_gone]
        self._run(_DROP_TRANSCRIPTS, gone)

    def link_heads(self) -> None:
        """Move the head of every version journaled but not saved to its last entry."""
        unsaved = [rid for rid in self._heads if rid not in self._saved]
        # A row as stored with a new head: the upsert rewrites the page it is on anyway.
        self._run(
            _SAVE_ROWS,
            [
                (*self._stored[rid][:_HEAD], self._heads[rid])
                for rid in unsaved
                if rid in self._stored
            ],
        )
        self._run(
            _SAVE_HEADS,
            [(*rid, self._heads[rid]) for rid in unsaved if rid not in self._stored],
        )
        # A version that has an objects row now keeps its head there (rare: an event that
        # only went to the journal came first).
        self._conn.executemany(_DROP_HEAD, [rid for rid in self._headed if rid in self._saved])

    def _head(self, rid: RowId) -> int | None:
        if rid in self._heads:
            return self._heads[rid]
        stored = self._stored.get(rid)
        return None if stored is None else cast(int | None, stored[_HEAD])

    def _load_heads(self, rids: Sequence[RowId]) -> dict[RowId, int]:
        """The objects rows of ``rids`` (kept for load_rows) and every version's head."""
        heads: dict[RowId, int] = {}
        for row in self._select(_LOAD_ROWS, rids):
            rid = (row[0], row[1], row[2])
            self._stored[rid] = row
            if row[_HEAD] is not None:
                heads[rid] = row[_HEAD]
        missing = [rid for rid in rids if rid not in self._stored]
        for bucket, key, version_id, head in self._select(_LOAD_HEADS, missing):
            heads[(bucket, key, version_id)] = head
            self._headed.add((bucket, key, version_id))
        return heads

    def _run(self, template: str, rows: Sequence[Sequence[object]]) -> int:
        """Run ``template`` over ``rows`` (multi-row slices); the rows it changed."""
        changed = 0
        for statement, params in _multi_row(template, rows):
            changed += self._conn.execute(statement, params).rowcount
        return changed

    def _select(self, template: str, keys: Sequence[Sequence[object]]) -> list[Any]:
        """Rows of ``template`` joined to ``keys`` (a VALUES list), in slices."""
        found: list[Any] = []
        for statement, params in _multi_row(template, keys):
            found += self._conn.execute(statement, params).fetchall()
        return found


# --- helpers ---------------------------------------------------------------------------


def _apply_batch(conn: sqlite3.Connection, items: Sequence[Item], now: datetime) -> BatchResult:
    """``run_batch`` to completion in one write transaction of ``conn``, in this thread."""
    writer = _Writer(conn, now)
    batch = run_batch(writer, items, now)
    try:
        conn.execute("BEGIN IMMEDIATE")  # see SqliteIndex._writing
    except BaseException:
        batch.close()
        raise
    try:
        result = _completed(batch)
        writer.link_heads()
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
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
    start = 0
    for size in _slice_sizes(len(rows), min(_VALUES_ROWS, _MAX_PARAMETERS // width)):
        chunk = rows[start : start + size]
        start += size
        yield _statement(template, width, size), list(chain.from_iterable(chunk))


@functools.lru_cache(maxsize=256)
def _statement(template: str, width: int, rows: int) -> str:
    """``template`` with its ``{rows}`` a VALUES list of ``rows`` rows of ``width`` values:
    kept, since a batch's few slice sizes come again in every batch (a 512-row list of
    the journal is ~30 KB of text to build)."""
    marks = "(" + ", ".join("?" * width) + ")"
    return template.format(rows=", ".join([marks] * rows))


def _slice_sizes(count: int, largest: int) -> list[int]:
    """Slices of ``count`` rows: as many of the largest power of two up to ``largest`` as
    fit, then the binary digits of the rest (2,000 in slices of 512: 512, 512, 512, 256,
    128, 64, 16)."""
    full = 1 << (max(1, largest).bit_length() - 1)
    sizes = [full] * (count // full)
    rest = count % full
    sizes += [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]
    return sizes


def _configure(conn: sqlite3.Connection) -> None:
    hand_the_gil_over_promptly()
    _ensure_wal(conn)
    conn.execute("PRAGMA synchronous = FULL")
    # LIKE is ASCII-case-insensitive by default; S3 keys are case-sensitive.
    conn.execute("PRAGMA case_sensitive_like = ON")
    # 32 MiB of page cache instead of 2: a batch's journal and object index entries land on
    # random pages (keys are UUIDs), and with 2 MiB most of them were read back from the
    # file. Pages are cached as they are touched, so a short CLI read stays small.
    conn.execute("PRAGMA cache_size = -32768")
    # Checkpoint the WAL into the main file every ~400 MiB instead of every ~4 MiB: a batch
    # of 2,000 events writes more than 1,000 pages, so at SQLite's default every commit
    # also ran a checkpoint (copying and fsyncing the file); less often, a page written by
    # several batches is copied once (10,000 pages took an eighth off each batch; 100,000
    # about a tenth more at 1M events, docs/benchmarks.md). Readers keep working meanwhile
    # (WAL); the WAL file is truncated back by the checkpoint's restart, not kept at size.
    conn.execute("PRAGMA wal_autocheckpoint = 100000")


def _ensure_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch the file to WAL (persistent, so usually already done).

    The switch needs an exclusive lock and SQLite answers SQLITE_BUSY at once, without the
    busy handler, when another connection is opening the same new file: retry briefly (in
    the connection's own thread, so the wait blocks nothing else).
    """
    for attempt in range(attempts):
        row = conn.execute("PRAGMA journal_mode").fetchone()
        if row is not None and str(row[0]).lower() == "wal":
            return
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (e.g. after SQLITE_FULL); nothing to undo then.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _json(metadata: Mapping[str, str]) -> str:
    return canonical_json(dict(metadata))


def _stored_values(row: ObjectRow) -> tuple[object, ...]:
    """``row`` as parameters in ``OBJECT_COLUMNS`` order: times as text, booleans as 0/1,
    the metadata as JSON."""
    deleted_at = row.deleted_at
    return (
        *row[:7], _json(row.metadata), _text(row.first_event_time),
        _text(row.last_event_time), row.sequencer, _text(row.indexed_at), int(row.deleted),
        row.last_event_name, None if deleted_at is None else _text(deleted_at),
    )  # fmt: skip


@functools.lru_cache(maxsize=8192)
def _text(moment: datetime) -> str:
    # Cached: a batch writes each event's time up to four times (journal, first and last
    # event time, deleted_at) and its indexed_at on every row. Most moments are UTC
    # already (events, now()): astimezone would only copy them.
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")
