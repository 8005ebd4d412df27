"""The shared index: PostgreSQL through an asyncpg pool, for more than one consumer process.

Each batch is one transaction. Before touching anything it takes a transaction-scoped
advisory lock per (bucket, key) of the batch, in ascending lock-id order: two processes
(e.g. during a Kafka rebalance) then cannot interleave their read-decide-write steps on
one object, and the fixed order rules out deadlocks between them.

Text columns that are compared or sorted use the "C" collation (migrations.py), so order
and keyset pagination are byte-wise, exactly as in SQLite. ``user_metadata`` is JSONB
with a GIN index; metadata search is a containment query.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal

import asyncpg
import msgspec

from consumer.errors import IndexUnavailable, IndexWriteFailed, LeaseLost
from consumer.events import EventKind, ObjectEvent
from consumer.index.decisions import canonical_json, decide_claims, latest_requests, run_batch
from consumer.index.migrations import migrate_postgres
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
    SEARCH_QUERY_CONFIGS,
    Conditions,
    Dialect,
    dollar,
    growth_query,
    jobs_query,
    journal_query,
    journal_values,
    listing_query,
    search_config,
    search_words,
    usage_query,
)
from consumer.index.store import AsyncLifecycle

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

# The batch's rows travel as one JSON text parameter, expanded by json_to_recordset in
# the server: one round trip per step, as with unnest() arrays, but asyncpg does not encode
# (and type-check) every element of 16 arrays on the client, which took a third of the
# indexer's time; msgspec writes the JSON in a microsecond a row. The record definitions
# give each field its column type, so a value of the wrong type fails as with arrays.
_JOURNAL_RECORD: Final = (
    "bucket text, key text, version_id text, event_name text, kind text,"
    " event_time timestamptz, sequencer text, principal_id text, source_ip text,"
    " user_agent text, request_id text, size bigint, etag text, kafka_topic text,"
    " kafka_partition integer, kafka_offset bigint"
)
_JOURNAL_FIELDS: Final = tuple(part.split()[0] for part in _JOURNAL_RECORD.split(","))
_JOURNAL_NEW: Final = f"""
INSERT INTO journal (bucket, key, version_id, event_name, kind, event_time, sequencer,
                     principal_id, source_ip, user_agent, request_id, size, etag,
                     kafka_topic, kafka_partition, kafka_offset, recorded_at)
SELECT {", ".join(_JOURNAL_FIELDS)}, $2::timestamptz
FROM json_to_recordset($1::json) AS r({_JOURNAL_RECORD})
ON CONFLICT (bucket, key, version_id, event_name, sequencer) DO NOTHING
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

_OBJECT_RECORD: Final = (
    "bucket text, key text, version_id text, size bigint, etag text, content_type text,"
    " user_id text, user_metadata jsonb, first_event_time timestamptz,"
    " last_event_time timestamptz, sequencer text, indexed_at timestamptz, deleted boolean,"
    " last_event_name text, deleted_at timestamptz"
)
_OBJECT_FIELDS: Final = tuple(part.split()[0] for part in _OBJECT_RECORD.split(","))
_SAVE_ROWS: Final = (
    f"""
INSERT INTO objects ({OBJECT_COLUMNS})
SELECT {", ".join(_OBJECT_FIELDS)}
FROM json_to_recordset($1::json) AS r({_OBJECT_RECORD})"""  # noqa: S608 - constant fragments
    + OBJECT_UPSERT
)

_LOAD_JOBS: Final = (
    f"SELECT {JOB_COLUMNS} FROM jobs"  # noqa: S608 - constant fragments
    " WHERE (bucket, key, version_id, processor) IN"
    " (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]))"
)

_PEND_JOBS: Final = (
    """
INSERT INTO jobs (bucket, key, version_id, processor, sequencer, etag, status, attempts,
                  created_at, updated_at, lease_owner, lease_expires_at)
SELECT *, 'pending', 0, $7::timestamptz, $7::timestamptz, $8::text, $9::timestamptz
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"""
    + JOB_PEND_UPSERT
)

_START_JOB: Final = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = $6, updated_at = $6
WHERE bucket = $1 AND key = $2 AND version_id = $3 AND processor = $4 AND sequencer = $5
  AND lease_owner = $7 AND status IN ('pending', 'running')
RETURNING attempts"""

_FINISH_JOB: Final = """
UPDATE jobs SET status = $6, last_error = $7, result_bucket = $8, result_key = $9,
                duration_ms = $10, finished_at = $11, updated_at = $11, lease_expires_at = NULL
WHERE bucket = $1 AND key = $2 AND version_id = $3 AND processor = $4 AND sequencer = $5
  AND lease_owner = $12 AND status IN ('pending', 'running')"""

_RENEW_LEASES: Final = """
UPDATE jobs SET lease_expires_at = $2
WHERE lease_owner = $1 AND status IN ('pending', 'running')"""

_LISTEDOBJECT_COLUMNS: Final = f"{OBJECT_COLUMNS}, ({PROCESSING_STATUS_SQL}) AS processing_status"

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

_COUNTS: Final = """
SELECT (SELECT COUNT(*) FROM objects WHERE NOT deleted),
       (SELECT COUNT(*) FROM objects WHERE deleted),
       (SELECT COUNT(*) FROM journal)"""


class PostgresIndex(AsyncLifecycle):
    """IndexStore on PostgreSQL. Safe to share one database between many processes.

    ``dsn`` is a ``postgresql://`` URL; it may hold a password, so it never appears in a
    repr or an error message.
    """

    db_system = "postgresql"  # OpenTelemetry's db.system.name

    def __init__(
        self,
        dsn: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
    ) -> None:
        self._dsn = dsn
        self._min = min_connections
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._pool: Any = None
        self._starting = asyncio.Lock()

    def __repr__(self) -> str:
        return "PostgresIndex(<dsn hidden>)"

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool and migrate. Idempotent.

        Raises IndexUnavailable (server unreachable, too many connections) or
        IndexWriteFailed (e.g. authentication refused, unknown database).
        """
        async with self._starting:
            if self._pool is not None:
                return
            with _translated():
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min,
                    max_size=self._max,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._command_timeout_s,
                    init=_init_connection,
                )
            try:
                with _translated():
                    async with pool.acquire() as conn:
                        await migrate_postgres(conn)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    async def close(self) -> None:
        """Close the pool, waiting for connections in use to be released. Idempotent."""
        async with self._starting:
            pool, self._pool = self._pool, None
            if pool is not None:
                with _translated():
                    await pool.close()

    async def ping(self) -> None:
        """Raises IndexUnavailable if the server does not answer."""
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    # --- writes ------------------------------------------------------------------------

    async def apply_batch(
        self, items: Sequence[tuple[ObjectEvent, KafkaPosition | None]]
    ) -> BatchResult:
        """See IndexStore.apply_batch: one transaction, per-key advisory locks first."""
        if not items:
            return BatchResult(0, 0, 0, 0)
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                _LOCK_KEYS, _lock_ids((event.bucket, event.key) for event, _ in items)
            )
            now = datetime.now(UTC)
            return await run_batch(_Writer(conn, now), items, now)

    async def prune_journal(self, older_than: datetime) -> int:
        """Delete journal entries with event_time before ``older_than``; their count."""
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM journal WHERE event_time < $1", older_than)
        return int(status.split()[-1])  # "DELETE <n>"

    # --- reads -------------------------------------------------------------------------

    async def list_objects(self, query: ObjectQuery) -> list[ObjectRecord]:
        """See IndexStore.list_objects."""
        sql, params = listing_query(query, _DIALECT)
        return [_object_record(row) for row in await self._fetch(sql, *params)]

    async def get_object(self, bucket: str, key: str, version_id: str = "") -> ObjectRecord | None:
        """The row of (bucket, key, version_id), tombstone or not; None if unknown."""
        rows = await self._fetch(
            f"SELECT {_LISTEDOBJECT_COLUMNS} FROM objects"  # noqa: S608 - constant fragments
            " WHERE bucket = $1 AND key = $2 AND version_id = $3",
            bucket,
            key,
            version_id,
        )
        return _object_record(rows[0]) if rows else None

    async def usage(self, *, by: Literal["user", "bucket"]) -> list[UsageRow]:
        """See IndexStore.usage."""
        rows = await self._fetch(usage_query(by, _DIALECT))
        return [UsageRow(*row) for row in rows]

    async def put_transcript(self, transcript: Transcript) -> None:
        """See IndexStore.put_transcript: its tsvector in the configuration of its
        language (``search_config``)."""
        async with self._connection() as conn:
            await conn.execute(
                _PUT_TRANSCRIPT,
                transcript.bucket,
                transcript.key,
                transcript.version_id,
                transcript.processor,
                transcript.language,
                search_config(transcript.language),
                transcript.text,
                datetime.now(UTC),
            )

    async def growth(
        self, *, since: date, bucket: str | None = None, user_id: str | None = None
    ) -> list[GrowthRow]:
        """See IndexStore.growth."""
        start = datetime.combine(since, time(), tzinfo=UTC)
        sql, params = growth_query(
            dollar,
            "to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            start,
            bucket=bucket,
            user_id=user_id,
        )
        rows = await self._fetch(sql, *params)
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
        sql, params = journal_query(dollar, bucket=bucket, key=key, kinds=kinds, limit=limit)
        rows = await self._fetch(sql, *params)
        return [_journal_record(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """See IndexStore.counts."""
        (row,) = await self._fetch(_COUNTS)
        return {"objects": row[0], "tombstones": row[1], "journal": row[2]}

    # --- processing jobs -----------------------------------------------------------------

    async def claim_jobs(self, requests: Sequence[JobRequest], lease: Lease) -> Claims:
        """See IndexStore.claim_jobs. Per-object advisory locks, as in apply_batch, so
        two processors cannot both claim one job."""
        requests = latest_requests(requests)
        if not requests:
            return Claims(run=[])
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_LOCK_KEYS, _lock_ids((r.bucket, r.key) for r in requests))
            rows = await conn.fetch(_LOAD_JOBS, *_columns([r.ident for r in requests]))
            stored = {
                (j.bucket, j.key, j.version_id, j.processor): j for j in map(_job_record, rows)
            }
            # The database's clock, not this host's: claimers on several hosts compare
            # leases against one clock.
            now = await conn.fetchval("SELECT now()")
            claims = decide_claims(requests, stored, now=now)
            if claims.run:
                values = [(*r.ident, r.sequencer, r.etag) for r in claims.run]
                await conn.execute(
                    _PEND_JOBS, *_columns(values), now, lease.owner, lease.expires_at(now)
                )
            return claims

    async def start_job(self, request: JobRequest, owner: str) -> int:
        """See IndexStore.start_job."""
        async with self._connection() as conn:
            attempts = await conn.fetchval(
                _START_JOB, *request.ident, request.sequencer, datetime.now(UTC), owner
            )
        if attempts is None:
            raise LeaseLost(f"the lease of {'/'.join(request.ident)} went to another process")
        return int(attempts)

    async def renew_leases(self, lease: Lease) -> int:
        """See IndexStore.renew_leases."""
        async with self._connection() as conn:
            now = await conn.fetchval("SELECT now()")
            status = await conn.execute(_RENEW_LEASES, lease.owner, lease.expires_at(now))
        return int(status.rsplit(" ", 1)[-1])

    async def finish_job(self, request: JobRequest, outcome: JobOutcome, owner: str) -> bool:
        """See IndexStore.finish_job."""
        async with self._connection() as conn:
            status = await conn.execute(
                _FINISH_JOB,
                *request.ident,
                request.sequencer,
                outcome.status.value,
                outcome.error,
                outcome.result_bucket,
                outcome.result_key,
                outcome.duration_ms,
                datetime.now(UTC),
                owner,
            )
        return bool(int(status.rsplit(" ", 1)[-1]))

    async def jobs(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        status: JobStatus | None = None,
        limit: int = 1000,
    ) -> list[JobRecord]:
        """See IndexStore.jobs."""
        sql, params = jobs_query(dollar, bucket=bucket, key=key, status=status, limit=limit)
        rows = await self._fetch(sql, *params)
        return [_job_record(row) for row in rows]

    # --- plumbing ------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise IndexUnavailable(f"{self!r} is not started (call start() first)")
        with _translated():
            async with self._pool.acquire() as conn:
                yield conn

    async def _fetch(self, sql: str, *params: object) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *params))


class _Writer:
    """The BatchWriter steps as PostgreSQL statements: one round trip each, the batch's
    values travelling as arrays (unnest), inside the batch's transaction."""

    def __init__(self, conn: Any, now: datetime) -> None:
        self._conn = conn
        self._now = now

    async def journal_new(self, items: Sequence[Item]) -> set[JournalId]:
        if not items:
            return set()
        records = _records(_JOURNAL_FIELDS, (_journal_row(e, p) for e, p in items))
        rows = await self._conn.fetch(_JOURNAL_NEW, records, self._now)
        return {tuple(row) for row in rows}

    async def load_rows(
        self, rows: Collection[RowId], all_versions_of: Collection[tuple[str, str]]
    ) -> list[ObjectRecord]:
        keys = _records(("bucket", "key", "version_id"), rows)
        found = list(await self._conn.fetch(_LOAD_ROWS, keys))
        if all_versions_of:
            objects = _records(("bucket", "key"), all_versions_of)
            found += await self._conn.fetch(_LOAD_ALL_VERSIONS, objects)
        return [_object_record(row) for row in found]

    async def save_rows(self, rows: Sequence[ObjectRecord]) -> None:
        records = _records(_OBJECT_FIELDS, (_object_row(row) for row in rows))
        await self._conn.execute(_SAVE_ROWS, records)
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


def _dumps(value: Any) -> str:
    return canonical_json(value)


@contextmanager
def _translated() -> Iterator[None]:
    """Turn asyncpg/OS errors into IndexUnavailable (retriable) or IndexWriteFailed."""
    try:
        yield
    except _TRANSIENT as exc:
        raise IndexUnavailable(f"PostgreSQL index unavailable: {_describe(exc)}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise IndexWriteFailed(f"PostgreSQL index error: {_describe(exc)}") from exc


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


def _add_metadata(where: Conditions, metadata: dict[str, str]) -> None:
    # Containment is what the GIN (jsonb_path_ops) index serves.
    where.add("user_metadata @> {}", metadata)


def _same(moment: datetime) -> object:
    return moment


def _text_query(text: str) -> object:
    return " ".join(search_words(text))


_DIALECT: Final = Dialect(
    placeholder=dollar,
    is_deleted="deleted",
    is_live="NOT deleted",
    add_metadata=_add_metadata,
    moment=_same,
    text_hits=_TEXT_HITS,
    text_query=_text_query,
)


_RECORDS_JSON: Final = msgspec.json.Encoder()


def _records(fields: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows as the JSON array of objects json_to_recordset() takes (times as RFC 3339)."""
    return _RECORDS_JSON.encode([dict(zip(fields, row, strict=True)) for row in rows]).decode()


def _columns(rows: Iterable[Sequence[Any]], width: int | None = None) -> list[list[Any]]:
    """Rows turned into one list per column, the shape unnest() takes."""
    materialised = list(rows)
    count = width if width is not None else len(materialised[0]) if materialised else 0
    return [[row[i] for row in materialised] for i in range(count)]


def _journal_row(event: ObjectEvent, position: KafkaPosition | None) -> tuple[object, ...]:
    return journal_values(event, position, event.event_time)


def _object_row(record: ObjectRecord) -> tuple[object, ...]:
    """``record`` as values in ``OBJECT_COLUMNS`` order."""
    return (
        record.bucket,
        record.key,
        record.version_id,
        record.size,
        record.etag,
        record.content_type,
        record.user_id,
        dict(record.metadata),
        record.first_event_time,
        record.last_event_time,
        record.sequencer,
        record.indexed_at,
        record.deleted,
        record.last_event_name,
        record.deleted_at,
    )


def _object_record(row: Any) -> ObjectRecord:
    return ObjectRecord(
        bucket=row["bucket"],
        key=row["key"],
        version_id=row["version_id"],
        size=row["size"],
        etag=row["etag"],
        content_type=row["content_type"],
        user_id=row["user_id"],
        metadata=row["user_metadata"],
        first_event_time=row["first_event_time"],
        last_event_time=row["last_event_time"],
        sequencer=row["sequencer"],
        indexed_at=row["indexed_at"],
        deleted=row["deleted"],
        last_event_name=row["last_event_name"],
        deleted_at=row["deleted_at"],
        processing_status=row.get("processing_status"),
        is_latest=row.get("is_latest"),
        snippet=row.get("snippet"),
    )


def _job_record(row: Any) -> JobRecord:
    return JobRecord(
        bucket=row["bucket"],
        key=row["key"],
        version_id=row["version_id"],
        processor=row["processor"],
        sequencer=row["sequencer"],
        etag=row["etag"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        result_bucket=row["result_bucket"],
        result_key=row["result_key"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_ms=row["duration_ms"],
        updated_at=row["updated_at"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
    )


def _journal_record(row: Any) -> JournalRecord:
    topic = row["kafka_topic"]
    return JournalRecord(
        id=row["id"],
        bucket=row["bucket"],
        key=row["key"],
        version_id=row["version_id"],
        event_name=row["event_name"],
        kind=EventKind(row["kind"]),
        event_time=row["event_time"],
        sequencer=row["sequencer"],
        principal_id=row["principal_id"],
        source_ip=row["source_ip"],
        user_agent=row["user_agent"],
        request_id=row["request_id"],
        size=row["size"],
        etag=row["etag"],
        kafka=KafkaPosition(topic, row["kafka_partition"], row["kafka_offset"]) if topic else None,
        recorded_at=row["recorded_at"],
    )
