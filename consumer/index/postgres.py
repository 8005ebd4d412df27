"""The shared index: PostgreSQL through an asyncpg pool, for more than one consumer process.

Each batch is one transaction. Before touching anything it takes a transaction-scoped
advisory lock per (bucket, key) of the batch, in ascending lock-id order: two processes
(e.g. during a Kafka rebalance) then cannot interleave their read-decide-write steps on
one object, and the fixed order rules out deadlocks between them.

Text columns that are compared or sorted use the "C" collation (migrations.py), so order
and keyset pagination are byte-wise, exactly as in SQLite. ``user_metadata`` is JSONB
with a GIN index; metadata search is a containment query.

The operations are ``SqlIndex``'s, written once for both backends; this module holds only
what is PostgreSQL's own: the pool, the advisory locks, error translation, the dialect
(``$n`` placeholders, tsvector search) and the statements whose rows travel as JSON or
arrays (the batch's ``_Writer``, job claims).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
)
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

from consumer.errors import IndexUnavailable, IndexWriteFailed
from consumer.events import AnyEvent
from consumer.index.decisions import JobStart, canonical_json, journal_id, run_batch
from consumer.index.migrations import migrate_postgres
from consumer.index.records import (
    BatchResult,
    Item,
    KafkaPosition,
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
    SEARCH_QUERY_CONFIGS,
    Conditions,
    Dialect,
    RowReader,
    dollar,
    journal_values,
    key_is,
    search_config,
    search_words,
)
from consumer.index.sql_index import SqlIndex
from consumer.index.store import BatchWriter
from consumer.index.threads import LoopThread

# Errors after which the same statement may well succeed later: the server is down,
# restarting, full of connections, or chose this transaction as a deadlock victim.
_TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


# unnest() yields the (already sorted) ids in array order, one lock call per row.
_LOCK_KEYS: Final = "SELECT pg_advisory_xact_lock(lock_id) FROM unnest($1::bigint[]) AS lock_id"

# The batch's journal entries and saved rows travel by COPY into a temporary staging
# table of the connection (binary, one stream, no statement text or parameter per value),
# then one INSERT … SELECT moves them into place. Staged rows go at COMMIT (and with a
# rollback). Stage columns are plain types: user_metadata as text, cast to jsonb on the
# way in, because COPY's binary format has no use for the text codec of jsonb.
_JOURNAL_STAGE_COLUMNS: Final = (
    "ord integer, bucket text, key text, version_id text, event_name text, kind text,"
    " event_time timestamptz, sequencer text, principal_id text, source_ip text,"
    " user_agent text, request_id text, size bigint, etag text, kafka_topic text,"
    " kafka_partition integer, kafka_offset bigint"
)
_JOURNAL_FIELDS: Final = tuple(part.split()[0] for part in _JOURNAL_STAGE_COLUMNS.split(","))
_OBJECT_STAGE_COLUMNS: Final = (
    "bucket text, key text, version_id text, size bigint, etag text, content_type text,"
    " user_id text, user_metadata text, first_event_time timestamptz,"
    " last_event_time timestamptz, sequencer text, indexed_at timestamptz, deleted boolean,"
    " last_event_name text, deleted_at timestamptz"
)
_OBJECT_FIELDS: Final = tuple(part.split()[0] for part in _OBJECT_STAGE_COLUMNS.split(","))
_STAGES: Final = (
    f"CREATE TEMP TABLE IF NOT EXISTS journal_stage ({_JOURNAL_STAGE_COLUMNS})"
    " ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE IF NOT EXISTS objects_stage ({_OBJECT_STAGE_COLUMNS})"
    " ON COMMIT DELETE ROWS",
)
# In arrival order (ord), so ids follow it as before; a redelivered event hits the
# identity index.
_JOURNAL_NEW: Final = f"""
INSERT INTO journal (bucket, key, version_id, event_name, kind, event_time, sequencer,
                     principal_id, source_ip, user_agent, request_id, size, etag,
                     kafka_topic, kafka_partition, kafka_offset, recorded_at)
SELECT {", ".join(_JOURNAL_FIELDS[1:])}, $1::timestamptz
FROM journal_stage ORDER BY ord
ON CONFLICT (sequencer, bucket, key, version_id, event_name) DO NOTHING
RETURNING bucket, key, version_id, event_name, sequencer"""  # noqa: S608 - constant fragments

_LOAD_ROWS: Final = (
    f"SELECT {OBJECT_COLUMNS} FROM objects"  # noqa: S608 - constant fragments
    " WHERE (bucket, key, version_id) IN (SELECT bucket, key, version_id"
    " FROM json_to_recordset($1::json) AS r(bucket text, key text, version_id text))"
)
_LOAD_ALL_VERSIONS: Final = (
    f"SELECT {OBJECT_COLUMNS} FROM objects"  # noqa: S608 - constant fragments
    " WHERE (bucket, key) IN (SELECT bucket, key"
    " FROM json_to_recordset($1::json) AS r(bucket text, key text))"
)

_SAVE_ROWS: Final = (
    f"""
INSERT INTO objects ({OBJECT_COLUMNS})
SELECT {", ".join(_OBJECT_FIELDS).replace("user_metadata", "user_metadata::jsonb")}
FROM objects_stage"""  # noqa: S608 - constant fragments
    + OBJECT_UPSERT
)

_LOAD_JOBS: Final = (
    f"SELECT {JOB_COLUMNS} FROM jobs"  # noqa: S608 - constant fragments
    " WHERE (bucket, key, version_id, processor) IN"
    " (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]))"
)

_PEND_JOBS: Final = (
    """
INSERT INTO jobs (bucket, key, version_id, processor, sequencer, etag, attempts, last_error,
                  status, created_at, updated_at, lease_owner, lease_expires_at)
SELECT *, 'pending', $9::timestamptz, $9::timestamptz, $10::text, $11::timestamptz
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::int[], $8::text[])"""
    + JOB_PEND_UPSERT
)

_PUT_TRANSCRIPT: Final = """
INSERT INTO transcripts (bucket, key, version_id, processor, language, config, text,
                         document, updated_at)
VALUES ($1, $2, $3, $4, $5, $6::regconfig, $7, to_tsvector($6::regconfig, $7), $8)
ON CONFLICT (bucket, key, version_id, processor) DO UPDATE SET
    language = excluded.language, config = excluded.config, text = excluded.text,
    document = excluded.document, updated_at = excluded.updated_at"""

_DROP_TRANSCRIPTS: Final = """
DELETE FROM transcripts WHERE (bucket, key, version_id) IN
    (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"""

# The query is read in every configuration of SEARCH_QUERY_CONFIGS (OR-ed), so each
# transcript is matched by the stems of its own language; the GIN index serves it.
_TEXT_QUERY: Final = " || ".join(
    f"plainto_tsquery('{config}', {{0}}::text)" for config in SEARCH_QUERY_CONFIGS
)
_TEXT_HITS: Final = (
    "SELECT t.bucket AS hit_bucket, t.key AS hit_key, t.version_id AS hit_version,"  # noqa: S608 - constant fragments
    " ts_headline(t.config, t.text, q.query,"
    " 'StartSel=[, StopSel=], MaxWords=16, MinWords=6, MaxFragments=1') AS snippet"
    f" FROM transcripts AS t, (SELECT {_TEXT_QUERY} AS query) AS q"
    " WHERE t.document @@ q.query"
)


def _add_metadata(where: Conditions, metadata: dict[str, str]) -> None:
    # Containment is what the GIN (jsonb_path_ops) index serves.
    where.add("user_metadata @> {}", metadata)


def _as_is(value: Any) -> Any:
    return value


def _text_query(text: str) -> object:
    return " ".join(search_words(text))


_DIALECT: Final = Dialect(
    placeholder=dollar,
    is_deleted="deleted",
    is_live="NOT deleted",
    add_metadata=_add_metadata,
    add_key_history=key_is,
    moment=_as_is,
    text_hits=_TEXT_HITS,
    text_query=_text_query,
)

# asyncpg decodes timestamptz as datetime, and JSONB as a dict (``_init_connection``).
_READER: Final = RowReader(time=_as_is, metadata=_as_is)
_object_row_of: Final = _READER.object_row  # the name _Writer reads rows by


class PostgresIndex(SqlIndex[Any, Any]):
    """IndexStore on PostgreSQL. Safe to share one database between many processes.

    ``dsn`` is a ``postgresql://`` URL; it may hold a password, so it never appears in a
    repr or an error message.
    """

    db_system = "postgresql"
    dialect = _DIALECT
    row_reader = _READER
    event_day = "to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    put_transcript_sql = _PUT_TRANSCRIPT

    def __init__(
        self,
        dsn: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
    ) -> None:
        super().__init__()
        self._dsn = dsn
        self._min = min_connections
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        # Batches get a thread, an event loop and a pool of their own (``_apply``), made at
        # the first batch: a CLI read never starts them.
        self._batches: LoopThread | None = None
        self._batch_pool: Any = None
        self._batch_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return "PostgresIndex(<dsn hidden>)"

    # --- connections: a pool, one connection per operation ------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn asyncpg/OS errors into IndexUnavailable (retriable) or IndexWriteFailed."""
        try:
            yield
        except _TRANSIENT as exc:
            raise IndexUnavailable(f"PostgreSQL index unavailable: {_describe(exc)}") from exc
        except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            if _connection_lost(exc):
                raise IndexUnavailable(f"PostgreSQL index unavailable: {_describe(exc)}") from exc
            raise IndexWriteFailed(f"PostgreSQL index error: {_describe(exc)}") from exc
        except asyncpg.PostgresError as exc:
            raise IndexWriteFailed(f"PostgreSQL index error: {_describe(exc)}") from exc

    async def _open(self) -> Any:
        return await asyncpg.create_pool(
            self._dsn,
            min_size=self._min,
            max_size=self._max,
            timeout=self._connect_timeout_s,
            command_timeout=self._command_timeout_s,
            init=_init_connection,
        )

    async def _prepare(self, handle: Any) -> None:
        async with handle.acquire() as conn:
            await migrate_postgres(conn)

    async def _release(self, handle: Any) -> None:
        try:
            await handle.close()  # waits for the connections in use to be released
        finally:
            async with self._batch_lock:
                batches, self._batches = self._batches, None
                batch_pool, self._batch_pool = self._batch_pool, None
                if batches is not None:
                    if batch_pool is not None:
                        await batches.run(batch_pool.close())
                    await batches.stop()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Any]:
        pool = self._started()
        with self._translated():
            async with pool.acquire() as conn:
                yield conn

    def _writing(self) -> AbstractAsyncContextManager[Any]:
        return self._reading()  # one statement commits on its own

    @asynccontextmanager
    async def _exclusive(self, objects: Iterable[tuple[str, str]]) -> AsyncIterator[Any]:
        # Before touching anything: the advisory lock of every object, in lock-id order.
        async with self._reading() as conn, conn.transaction():
            await conn.execute(_LOCK_KEYS, _lock_ids(objects))
            yield conn

    async def _rows(self, conn: Any, sql: str, params: Sequence[object]) -> list[Any]:
        return list(await conn.fetch(sql, *params))

    async def _execute(self, conn: Any, sql: str, params: Sequence[object]) -> int:
        status = await conn.execute(sql, *params)
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE <n>", "DELETE <n>", "INSERT 0 <n>"

    async def _clock(self, conn: Any) -> datetime:
        # The database's clock, not this host's: claimers on several hosts compare leases
        # against one clock.
        now: datetime = await conn.fetchval("SELECT now()")
        return now

    # --- the steps whose rows travel as JSON or arrays ----------------------------------

    def _writer(self, conn: Any, now: datetime) -> BatchWriter:
        return _Writer(conn, now)

    async def _apply(self, items: Sequence[Item], now: datetime) -> BatchResult:
        # In the batches' own thread and loop: the batch's Python (planning, COPY rows)
        # runs there while this loop decodes the next batch, instead of taking turns with
        # it on one thread.
        batches, pool = await self._batch_runner()
        return await batches.run(self._apply_with(pool, items, now))

    async def _batch_runner(self) -> tuple[LoopThread, Any]:
        """The batches' thread and pool, made at the first batch after start()."""
        self._started()
        async with self._batch_lock:
            if self._batches is None:
                self._batches = LoopThread("postgres-index-batches")
            if self._batch_pool is None:
                with self._translated():
                    self._batch_pool = await self._batches.run(self._open())
            return self._batches, self._batch_pool

    async def _apply_with(self, pool: Any, items: Sequence[Item], now: datetime) -> BatchResult:
        with self._translated():
            async with pool.acquire() as conn, conn.transaction():
                # Before touching anything: the advisory lock of every object, in order.
                await conn.execute(_LOCK_KEYS, _lock_ids((e.bucket, e.key) for e, _ in items))
                return await run_batch(_Writer(conn, now), items, now)

    async def _stored_jobs(
        self, conn: Any, idents: Sequence[tuple[str, str, str, str]]
    ) -> list[Any]:
        return list(await conn.fetch(_LOAD_JOBS, *_columns(idents)))

    async def _pend_jobs(
        self, conn: Any, jobs: Sequence[JobStart], now: datetime, lease: Lease
    ) -> None:
        values = [(*r.ident, r.sequencer, r.etag, attempts, error) for r, attempts, error in jobs]
        await conn.execute(_PEND_JOBS, *_columns(values), now, lease.owner, lease.expires_at(now))

    def _transcript_values(self, transcript: Transcript) -> tuple[object, ...]:
        # Its tsvector in the configuration of its language.
        return (
            transcript.bucket,
            transcript.key,
            transcript.version_id,
            transcript.processor,
            transcript.language,
            search_config(transcript.language),
            transcript.text,
        )


class _Writer:
    """The BatchWriter steps as PostgreSQL statements: one round trip each, the batch's
    values travelling as arrays (unnest), inside the batch's transaction."""

    def __init__(self, conn: Any, now: datetime) -> None:
        self._conn = conn
        self._now = now

    async def journal_new(self, items: Sequence[Item]) -> list[Item]:
        if not items:
            return []
        records = [(n, *_journal_row(e, p)) for n, (e, p) in enumerate(items)]
        await self._conn.copy_records_to_table(
            "journal_stage", records=records, columns=_JOURNAL_FIELDS
        )
        inserted = {tuple(row) for row in await self._conn.fetch(_JOURNAL_NEW, self._now)}
        return [item for item in items if journal_id(item[0]) in inserted]

    async def load_rows(
        self, rows: Collection[RowId], all_versions_of: Collection[tuple[str, str]]
    ) -> list[ObjectRow]:
        keys = _records(("bucket", "key", "version_id"), rows)
        found = list(await self._conn.fetch(_LOAD_ROWS, keys))
        if all_versions_of:
            objects = _records(("bucket", "key"), all_versions_of)
            found += await self._conn.fetch(_LOAD_ALL_VERSIONS, objects)
        return [_object_row_of(row) for row in found]

    async def save_rows(self, rows: Sequence[ObjectRow]) -> None:
        records = [_stored_values(row) for row in rows]
        await self._conn.copy_records_to_table(
            "objects_stage", records=records, columns=_OBJECT_FIELDS
        )
        await self._conn.execute(_SAVE_ROWS)
        # What was said in a removed version is not searchable any more.
        gone = [(row.bucket, row.key, row.version_id) for row in rows if row.is_gone]
        if gone:
            await self._conn.execute(_DROP_TRANSCRIPTS, *_columns(gone))


# --- helpers ---------------------------------------------------------------------------


async def _init_connection(conn: Any) -> None:
    # JSONB in and out as Python dicts.
    await conn.set_type_codec(
        "jsonb", encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )
    for statement in _STAGES:  # the batch's staging tables, this connection's own
        await conn.execute(statement)


def _dumps(value: Any) -> str:
    return canonical_json(value)


def _connection_lost(exc: BaseException) -> bool:
    """An InterfaceError or InternalClientError that only says the connection went away
    under an operation.

    When the server closes a connection inside a transaction (a shutdown, a restart, a
    terminated backend), asyncpg's transaction exit raises InterfaceError "... the
    underlying connection is closed", whether or not a statement failed first. The
    transaction did not commit, so the operation may be tried again once the server is
    back; any other InterfaceError (misuse of a connection) stays permanent.

    At a shutdown the server also sends each idle connection a FATAL error before closing
    it; asyncpg, expecting nothing while idle, leaves that connection's protocol in an
    error state, and a statement sent on it before the close is noticed fails with
    InternalClientError "cannot switch to state ...". The pool discards that connection,
    so the operation may be tried again on another.
    """
    return (
        isinstance(exc.__context__, _TRANSIENT)
        or str(exc).endswith("connection is closed")
        or str(exc).startswith("cannot switch to state")
    )


def _describe(exc: BaseException) -> str:
    # asyncpg messages name the failing host/port at most, never the password.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _lock_ids(objects: Iterable[tuple[str, str]]) -> list[int]:
    """Sorted, distinct signed 64-bit advisory-lock ids of (bucket, key) pairs."""
    ids: set[int] = set()
    for bucket, key in objects:
        digest = hashlib.blake2b(
            f"{bucket}\x00{key}".encode(), digest_size=8, person=b"vox-obj"
        ).digest()
        ids.add(int.from_bytes(digest, "big", signed=True))
    return sorted(ids)


_RECORDS_JSON: Final = msgspec.json.Encoder()


def _records(fields: tuple[str, ...], rows: Iterable[Sequence[Any]]) -> str:
    """Rows as the JSON array of objects json_to_recordset() takes (times as RFC 3339)."""
    record = _record_type(fields)
    return _RECORDS_JSON.encode([record(*row) for row in rows]).decode()


@functools.cache
def _record_type(fields: tuple[str, ...]) -> type[msgspec.Struct]:
    # A struct per field list encodes as the same JSON object as a dict of those fields,
    # in a quarter of the time (no dict built per row).
    return msgspec.defstruct("Record", fields)


def _columns(rows: Iterable[Sequence[Any]], width: int | None = None) -> list[list[Any]]:
    """Rows turned into one list per column, the shape unnest() takes."""
    materialised = list(rows)
    count = width if width is not None else len(materialised[0]) if materialised else 0
    return [[row[i] for row in materialised] for i in range(count)]


def _journal_row(event: AnyEvent, position: KafkaPosition | None) -> tuple[object, ...]:
    return journal_values(event, position, event.event_time)


def _stored_values(row: ObjectRow) -> tuple[object, ...]:
    """``row`` as values in ``OBJECT_COLUMNS`` order: the metadata as JSON text (COPY
    sends it as it is), the rest as they are."""
    return (*row[:7], canonical_json(dict(row.metadata)), *row[8:])
