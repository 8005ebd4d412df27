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
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, Final, Literal

import asyncpg

from consumer.events import EventKind, ObjectEvent
from consumer.index.base import (
    Action,
    AsyncLifecycle,
    BatchResult,
    Conditions,
    IndexUnavailable,
    IndexWriteFailed,
    JournalRecord,
    KafkaPosition,
    ObjectFilter,
    ObjectRecord,
    StoredState,
    UsageRow,
    check_limit,
    dollar,
    run_batch,
)
from consumer.index.migrations import migrate_postgres

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

_OBJECT_COLUMNS: Final = (
    "bucket, key, version_id, size, etag, content_type, user_id, user_metadata,"
    " first_event_time, last_event_time, sequencer, indexed_at, deleted, last_event_name,"
    " deleted_at"
)
_JOURNAL_COLUMNS: Final = (
    "id, bucket, key, version_id, event_name, kind, event_time, sequencer, principal_id,"
    " source_ip, user_agent, request_id, size, etag, kafka_topic, kafka_partition,"
    " kafka_offset, recorded_at"
)

# unnest() yields the (already sorted) ids in array order, one lock call per row.
_LOCK_KEYS: Final = "SELECT pg_advisory_xact_lock(lock_id) FROM unnest($1::bigint[]) AS lock_id"

_INSERT_JOURNAL: Final = """
INSERT INTO journal (bucket, key, version_id, event_name, kind, event_time, sequencer,
                     principal_id, source_ip, user_agent, request_id, size, etag,
                     kafka_topic, kafka_partition, kafka_offset, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (bucket, key, version_id, event_name, sequencer) DO NOTHING
RETURNING id"""

_LOAD_STATE: Final = """
SELECT sequencer, last_event_time, deleted FROM objects
WHERE bucket = $1 AND key = $2 AND version_id = $3"""

_INSERT_OBJECT: Final = """
INSERT INTO objects (bucket, key, version_id, size, etag, content_type, user_metadata, user_id,
                     first_event_time, last_event_time, sequencer, last_event_name, deleted,
                     deleted_at, indexed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"""

_OVERWRITE_OBJECT: Final = """
UPDATE objects SET size = $4, etag = $5, content_type = $6, user_metadata = $7, user_id = $8,
                   last_event_time = $9, sequencer = $10, last_event_name = $11,
                   deleted = false, deleted_at = NULL, indexed_at = $12
WHERE bucket = $1 AND key = $2 AND version_id = $3"""

# A metadata change carries what it carries: keep stored values it does not mention.
_TOUCH_OBJECT: Final = """
UPDATE objects SET size = COALESCE($4, size), etag = COALESCE($5, etag),
                   content_type = COALESCE($6, content_type),
                   user_metadata = COALESCE($7, user_metadata), user_id = COALESCE($8, user_id),
                   last_event_time = $9, sequencer = $10, last_event_name = $11,
                   deleted = false, deleted_at = NULL, indexed_at = $12
WHERE bucket = $1 AND key = $2 AND version_id = $3"""

_TOMBSTONE_OBJECT: Final = """
UPDATE objects SET deleted = true, deleted_at = $4, last_event_time = $4, sequencer = $5,
                   last_event_name = $6, indexed_at = $7
WHERE bucket = $1 AND key = $2 AND version_id = $3"""

_SWEEP_VERSIONS: Final = """
UPDATE objects SET deleted = true, deleted_at = $4, last_event_time = $4, sequencer = $5,
                   last_event_name = $6, indexed_at = $7
WHERE bucket = $1 AND key = $2 AND version_id <> $3 AND NOT deleted AND sequencer < $5"""

_USAGE: Final[Mapping[str, str]] = {
    "user": """SELECT user_id, COUNT(*), COALESCE(SUM(size), 0)::bigint FROM objects
               WHERE NOT deleted GROUP BY user_id ORDER BY user_id IS NULL, user_id""",
    "bucket": """SELECT bucket, COUNT(*), COALESCE(SUM(size), 0)::bigint FROM objects
                 WHERE NOT deleted GROUP BY bucket ORDER BY bucket""",
}

_COUNTS: Final = """
SELECT (SELECT COUNT(*) FROM objects WHERE NOT deleted),
       (SELECT COUNT(*) FROM objects WHERE deleted),
       (SELECT COUNT(*) FROM journal)"""


class PostgresIndex(AsyncLifecycle):
    """IndexStore on PostgreSQL. Safe to share one database between many processes.

    ``dsn`` is a ``postgresql://`` URL; it may hold a password, so it never appears in a
    repr or an error message.
    """

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
            await conn.execute(_LOCK_KEYS, _lock_ids(event for event, _ in items))
            return await run_batch(_Writer(conn, datetime.now(UTC)), items)

    async def prune_journal(self, older_than: datetime) -> int:
        """Delete journal entries with event_time before ``older_than``; their count."""
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM journal WHERE event_time < $1", older_than)
        return int(status.split()[-1])  # "DELETE <n>"

    # --- reads -------------------------------------------------------------------------

    async def list_objects(
        self,
        *,
        bucket: str | None = None,
        user_id: str | None = None,
        prefix: str | None = None,
        metadata: Mapping[str, str] | None = None,
        include_deleted: bool = False,
        limit: int = 1000,
        after: tuple[str, str, str] | None = None,
    ) -> list[ObjectRecord]:
        """See IndexStore.list_objects."""
        where = _object_conditions(
            ObjectFilter(bucket, user_id, prefix, metadata, include_deleted, after)
        )
        sql = (
            f"SELECT {_OBJECT_COLUMNS} FROM objects{where.where}"  # noqa: S608 - constant fragments
            f" ORDER BY bucket, key, version_id LIMIT {where.next_placeholder()}"
        )
        rows = await self._fetch(sql, *where.params, check_limit(limit))
        return [_object_record(row) for row in rows]

    async def get_object(self, bucket: str, key: str, version_id: str = "") -> ObjectRecord | None:
        """The row of (bucket, key, version_id), tombstone or not; None if unknown."""
        rows = await self._fetch(
            f"SELECT {_OBJECT_COLUMNS} FROM objects"  # noqa: S608 - constant fragments
            " WHERE bucket = $1 AND key = $2 AND version_id = $3",
            bucket,
            key,
            version_id,
        )
        return _object_record(rows[0]) if rows else None

    async def usage(self, *, by: Literal["user", "bucket"]) -> list[UsageRow]:
        """See IndexStore.usage."""
        rows = await self._fetch(_USAGE[by])
        return [UsageRow(group=row[0], objects=row[1], bytes=row[2]) for row in rows]

    async def journal(
        self, *, bucket: str | None = None, key: str | None = None, limit: int = 100
    ) -> list[JournalRecord]:
        """See IndexStore.journal."""
        where = Conditions(dollar)
        if bucket is not None:
            where.add("bucket = {}", bucket)
        if key is not None:
            where.add("key = {}", key)
        sql = (
            f"SELECT {_JOURNAL_COLUMNS} FROM journal{where.where}"  # noqa: S608 - constant fragments
            f" ORDER BY id DESC LIMIT {where.next_placeholder()}"
        )
        rows = await self._fetch(sql, *where.params, check_limit(limit))
        return [_journal_record(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """See IndexStore.counts."""
        (row,) = await self._fetch(_COUNTS)
        return {"objects": row[0], "tombstones": row[1], "journal": row[2]}

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
    """The BatchWriter steps as PostgreSQL statements, inside the batch's transaction."""

    def __init__(self, conn: Any, now: datetime) -> None:
        self._conn = conn
        self._now = now

    async def add_to_journal(self, event: ObjectEvent, position: KafkaPosition | None) -> bool:
        journal_id = await self._conn.fetchval(
            _INSERT_JOURNAL,
            event.bucket,
            event.key,
            event.version_id,
            event.event_name,
            event.kind.value,
            event.event_time,
            event.sequencer,
            event.principal_id,
            event.source_ip,
            event.user_agent,
            event.request_id,
            event.size,
            event.etag,
            position.topic if position else None,
            position.partition if position else None,
            position.offset if position else None,
            self._now,
        )
        return journal_id is not None

    async def load_state(self, event: ObjectEvent) -> StoredState | None:
        row = await self._conn.fetchrow(_LOAD_STATE, event.bucket, event.key, event.version_id)
        if row is None:
            return None
        return StoredState(row["sequencer"], row["last_event_time"], row["deleted"])

    async def write(self, action: Action, event: ObjectEvent) -> None:
        row = (event.bucket, event.key, event.version_id)
        progress = (event.event_time, event.sequencer, event.event_name, self._now)
        if action is Action.INSERT or action is Action.INSERT_TOMBSTONE:
            await self._conn.execute(_INSERT_OBJECT, *row, *self._insert_params(action, event))
        elif action is Action.OVERWRITE:
            await self._conn.execute(
                _OVERWRITE_OBJECT, *row, *_content(event, dict(event.user_metadata)), *progress
            )
        elif action is Action.TOUCH:
            metadata = dict(event.user_metadata) or None
            await self._conn.execute(_TOUCH_OBJECT, *row, *_content(event, metadata), *progress)
        elif action is Action.TOMBSTONE:
            await self._conn.execute(_TOMBSTONE_OBJECT, *row, *progress)
        else:
            raise IndexWriteFailed(f"action {action} does not write objects")

    async def sweep_versions(self, event: ObjectEvent) -> int:
        status = await self._conn.execute(
            _SWEEP_VERSIONS,
            event.bucket,
            event.key,
            event.version_id,
            event.event_time,
            event.sequencer,
            event.event_name,
            self._now,
        )
        return int(status.split()[-1])  # "UPDATE <n>"

    def _insert_params(self, action: Action, event: ObjectEvent) -> tuple[object, ...]:
        deleted = action is Action.INSERT_TOMBSTONE
        return (
            *_content(event, dict(event.user_metadata)),
            event.event_time,
            event.event_time,
            event.sequencer,
            event.event_name,
            deleted,
            event.event_time if deleted else None,
            self._now,
        )


# --- helpers ---------------------------------------------------------------------------


async def _init_connection(conn: Any) -> None:
    # JSONB in and out as Python dicts.
    await conn.set_type_codec(
        "jsonb", encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


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


def _lock_ids(events: Iterable[ObjectEvent]) -> list[int]:
    """Sorted, distinct signed 64-bit advisory-lock ids of the events' (bucket, key)."""
    ids: set[int] = set()
    for event in events:
        digest = hashlib.blake2b(
            f"{event.bucket}\x00{event.key}".encode(), digest_size=8, person=b"vox-obj"
        ).digest()
        ids.add(int.from_bytes(digest, "big", signed=True))
    return sorted(ids)


def _object_conditions(filters: ObjectFilter) -> Conditions:
    def add_metadata(where: Conditions, metadata: dict[str, str]) -> None:
        # Containment is what the GIN (jsonb_path_ops) index serves.
        where.add("user_metadata @> {}", metadata)

    return filters.conditions(dollar, live_only="NOT deleted", add_metadata=add_metadata)


def _content(event: ObjectEvent, metadata: dict[str, str] | None) -> tuple[object, ...]:
    return (event.size, event.etag, event.content_type, metadata, event.user_id)


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
