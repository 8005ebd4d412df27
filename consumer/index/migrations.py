"""Versioned schema migrations for both index dialects.

Each migration is (version, description, statements per dialect). ``start()`` of a store
applies the pending ones in version order, in ONE transaction, and records them in
``schema_migrations``; applied versions are never run again, so starting is idempotent.
Concurrency: SQLite takes the write lock up front (BEGIN IMMEDIATE); PostgreSQL takes a
transaction-scoped advisory lock, so two processes starting at once apply each migration
once — the second waits, then finds nothing pending.

To change the schema, append a Migration with the next version; never edit an applied one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from consumer.errors import IndexWriteFailed

# Two-key advisory lock ids ("vox", "migr"); the two-key space never collides with the
# one-key locks postgres.py takes per object.
PG_MIGRATION_LOCK: Final = (0x766F78, 0x6D696772)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_SQLITE_OBJECTS: Final = """
CREATE TABLE objects (
    bucket           TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    version_id       TEXT    NOT NULL DEFAULT '',
    size             INTEGER,
    etag             TEXT,
    content_type     TEXT,
    user_metadata    TEXT    NOT NULL DEFAULT '{}',
    user_id          TEXT,
    first_event_time TEXT    NOT NULL,
    last_event_time  TEXT    NOT NULL,
    sequencer        TEXT    NOT NULL DEFAULT '',
    last_event_name  TEXT    NOT NULL,
    deleted          INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    deleted_at       TEXT,
    indexed_at       TEXT    NOT NULL,
    PRIMARY KEY (bucket, key, version_id)
)"""

_SQLITE_JOURNAL: Final = """
CREATE TABLE journal (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket          TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    version_id      TEXT    NOT NULL DEFAULT '',
    event_name      TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    event_time      TEXT    NOT NULL,
    sequencer       TEXT    NOT NULL DEFAULT '',
    principal_id    TEXT,
    source_ip       TEXT,
    user_agent      TEXT,
    request_id      TEXT,
    size            INTEGER,
    etag            TEXT,
    kafka_topic     TEXT,
    kafka_partition INTEGER,
    kafka_offset    INTEGER,
    recorded_at     TEXT    NOT NULL,
    UNIQUE (bucket, key, version_id, event_name, sequencer)
)"""

_PG_OBJECTS: Final = """
CREATE TABLE objects (
    bucket           text COLLATE "C" NOT NULL,
    key              text COLLATE "C" NOT NULL,
    version_id       text COLLATE "C" NOT NULL DEFAULT '',
    size             bigint,
    etag             text,
    content_type     text,
    user_metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    user_id          text COLLATE "C",
    first_event_time timestamptz NOT NULL,
    last_event_time  timestamptz NOT NULL,
    sequencer        text COLLATE "C" NOT NULL DEFAULT '',
    last_event_name  text NOT NULL,
    deleted          boolean NOT NULL DEFAULT false,
    deleted_at       timestamptz,
    indexed_at       timestamptz NOT NULL,
    PRIMARY KEY (bucket, key, version_id)
)"""

_PG_JOURNAL: Final = """
CREATE TABLE journal (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket          text COLLATE "C" NOT NULL,
    key             text COLLATE "C" NOT NULL,
    version_id      text COLLATE "C" NOT NULL DEFAULT '',
    event_name      text NOT NULL,
    kind            text NOT NULL,
    event_time      timestamptz NOT NULL,
    sequencer       text COLLATE "C" NOT NULL DEFAULT '',
    principal_id    text,
    source_ip       text,
    user_agent      text,
    request_id      text,
    size            bigint,
    etag            text,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    recorded_at     timestamptz NOT NULL,
    UNIQUE (bucket, key, version_id, event_name, sequencer)
)"""

_SQLITE_JOBS: Final = """
CREATE TABLE jobs (
    bucket        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    version_id    TEXT    NOT NULL DEFAULT '',
    processor     TEXT    NOT NULL,
    sequencer     TEXT    NOT NULL DEFAULT '',
    etag          TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    result_bucket TEXT,
    result_key    TEXT,
    created_at    TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    duration_ms   INTEGER,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (bucket, key, version_id, processor)
)"""

_PG_JOBS: Final = """
CREATE TABLE jobs (
    bucket        text COLLATE "C" NOT NULL,
    key           text COLLATE "C" NOT NULL,
    version_id    text COLLATE "C" NOT NULL DEFAULT '',
    processor     text COLLATE "C" NOT NULL,
    sequencer     text COLLATE "C" NOT NULL DEFAULT '',
    etag          text,
    status        text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    result_bucket text,
    result_key    text,
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    duration_ms   bigint,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (bucket, key, version_id, processor)
)"""

# Transcripts for full-text search. SQLite: an external-content FTS5 table kept in step
# with ``transcripts`` by triggers; unicode61 folds case (Cyrillic too) and diacritics.
# PostgreSQL: a tsvector built in the configuration of the transcript's language, GIN.
_SQLITE_TRANSCRIPTS: Final = (
    """
CREATE TABLE transcripts (
    id         INTEGER PRIMARY KEY,
    bucket     TEXT NOT NULL,
    key        TEXT NOT NULL,
    version_id TEXT NOT NULL DEFAULT '',
    processor  TEXT NOT NULL,
    language   TEXT,
    text       TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (bucket, key, version_id, processor)
)""",
    "CREATE VIRTUAL TABLE transcripts_fts USING fts5(text, content='transcripts',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    """
CREATE TRIGGER transcripts_added AFTER INSERT ON transcripts BEGIN
    INSERT INTO transcripts_fts (rowid, text) VALUES (new.id, new.text);
END""",
    """
CREATE TRIGGER transcripts_removed AFTER DELETE ON transcripts BEGIN
    INSERT INTO transcripts_fts (transcripts_fts, rowid, text) VALUES ('delete', old.id, old.text);
END""",
    """
CREATE TRIGGER transcripts_changed AFTER UPDATE ON transcripts BEGIN
    INSERT INTO transcripts_fts (transcripts_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO transcripts_fts (rowid, text) VALUES (new.id, new.text);
END""",
)

_PG_TRANSCRIPTS: Final = (
    """
CREATE TABLE transcripts (
    bucket     text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    version_id text COLLATE "C" NOT NULL DEFAULT '',
    processor  text COLLATE "C" NOT NULL,
    language   text,
    config     regconfig NOT NULL,
    text       text NOT NULL,
    document   tsvector NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (bucket, key, version_id, processor)
)""",
    "CREATE INDEX transcripts_by_document ON transcripts USING gin (document)",
    # As many statements as SQLite's (test_open_index): these say what the columns mean.
    "COMMENT ON TABLE transcripts IS 'what processors heard, per object version (search)'",
    "COMMENT ON COLUMN transcripts.config IS 'text-search configuration of its language'",
    "COMMENT ON COLUMN transcripts.document IS 'to_tsvector(config, text)'",
)

# Renewing a runner's leases touches only its unfinished jobs.
_JOBS_LEASED: Final = (
    "CREATE INDEX jobs_leased ON jobs (lease_owner) WHERE status IN ('pending', 'running')"
)

# --- version 5: a layout designed for the batch's writes -----------------------------------
#
# Every index a batch inserts into at a random place costs a page write per event. SQLite:
# ``objects`` is clustered on its primary key (WITHOUT ROWID: one B-tree, not a table and
# its key index); the live-rows index gives way to a partial index of tombstones, and the
# user index to a partial one of the rows whose key is not under ``user_<id>/`` (the
# others are found by a primary-key range); the journal's identity is led by the
# sequencer, which grows with time, so its inserts land on the same few pages; per-key
# history is a chain (``prev_id``) from a head (``objects.last_journal_id``, or
# ``journal_heads`` for a version with no objects row) instead of a second index by key.
# PostgreSQL: the same identity index, and a hash index for per-key history.

_OBJECT_COLUMN_LIST: Final = (
    "bucket, key, version_id, size, etag, content_type, user_metadata, user_id,"
    " first_event_time, last_event_time, sequencer, last_event_name, deleted, deleted_at,"
    " indexed_at"
)
_JOURNAL_COLUMN_LIST: Final = (
    "id, bucket, key, version_id, event_name, kind, event_time, sequencer, principal_id,"
    " source_ip, user_agent, request_id, size, etag, kafka_topic, kafka_partition,"
    " kafka_offset, recorded_at"
)

_SQLITE_OBJECTS_V5: Final = _SQLITE_OBJECTS.replace(
    "CREATE TABLE objects (", "CREATE TABLE objects_v5 ("
).replace(
    "    PRIMARY KEY (bucket, key, version_id)\n)",
    "    last_journal_id  INTEGER,\n    PRIMARY KEY (bucket, key, version_id)\n) WITHOUT ROWID",
)

_SQLITE_JOURNAL_V5: Final = _SQLITE_JOURNAL.replace(
    "CREATE TABLE journal (", "CREATE TABLE journal_v5 ("
).replace(
    "    UNIQUE (bucket, key, version_id, event_name, sequencer)\n)",
    "    prev_id         INTEGER\n)",
)

# The rows of a user's own folder (``user_<id>/…``) are a primary-key range; this index
# holds only the others, so most inserts never touch it.
SQLITE_OTHER_USER_ROWS: Final = (
    "user_id IS NOT NULL AND substr(key, 1, length(user_id) + 6) IS NOT 'user_' || user_id || '/'"
)

_SQLITE_V5: Final = (
    _SQLITE_JOURNAL_V5,
    # Ids are kept; each entry points to the previous one of its (bucket, key, version).
    f"INSERT INTO journal_v5 ({_JOURNAL_COLUMN_LIST}, prev_id)"  # noqa: S608 - constant
    f" SELECT {_JOURNAL_COLUMN_LIST},"
    " LAG(id) OVER (PARTITION BY bucket, key, version_id ORDER BY id)"
    " FROM journal ORDER BY id",
    # AUTOINCREMENT's high-water mark carries over: ids freed by pruning are never reused,
    # so no chain can point to a stranger.
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'journal_v5', seq FROM sqlite_sequence"
    " WHERE name = 'journal' AND NOT EXISTS"
    " (SELECT 1 FROM sqlite_sequence WHERE name = 'journal_v5')",
    "UPDATE sqlite_sequence SET seq = (SELECT max(seq) FROM sqlite_sequence"
    " WHERE name IN ('journal', 'journal_v5')) WHERE name = 'journal_v5'",
    _SQLITE_OBJECTS_V5,
    f"INSERT INTO objects_v5 ({_OBJECT_COLUMN_LIST}, last_journal_id)"  # noqa: S608 - constant
    f" SELECT {_OBJECT_COLUMN_LIST}, (SELECT max(j.id) FROM journal AS j"
    " WHERE j.bucket = o.bucket AND j.key = o.key AND j.version_id = o.version_id)"
    " FROM objects AS o ORDER BY bucket, key, version_id",
    """
CREATE TABLE journal_heads (
    bucket          TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    version_id      TEXT    NOT NULL,
    last_journal_id INTEGER NOT NULL,
    PRIMARY KEY (bucket, key, version_id)
) WITHOUT ROWID""",
    "INSERT INTO journal_heads (bucket, key, version_id, last_journal_id)"
    " SELECT bucket, key, version_id, max(id) FROM journal AS j WHERE NOT EXISTS"
    " (SELECT 1 FROM objects AS o WHERE o.bucket = j.bucket AND o.key = j.key"
    " AND o.version_id = j.version_id) GROUP BY bucket, key, version_id",
    "DROP TABLE objects",
    "DROP TABLE journal",
    "ALTER TABLE objects_v5 RENAME TO objects",
    "ALTER TABLE journal_v5 RENAME TO journal",
    f"CREATE INDEX objects_by_other_user ON objects (user_id, bucket, key, version_id)"
    f" WHERE {SQLITE_OTHER_USER_ROWS}",
    "CREATE INDEX objects_gone ON objects (bucket, key) WHERE deleted = 1",
    "CREATE UNIQUE INDEX journal_identity"
    " ON journal (sequencer, bucket, key, version_id, event_name)",
    "CREATE INDEX journal_by_event_time ON journal (event_time)",
)

_PG_V5: Final = (
    "ALTER TABLE journal DROP CONSTRAINT journal_bucket_key_version_id_event_name_sequencer_key",
    "CREATE UNIQUE INDEX journal_identity"
    " ON journal (sequencer, bucket, key, version_id, event_name)",
    "CREATE INDEX journal_by_key ON journal USING hash (key)",
    "ANALYZE journal",
)


# Listing by (bucket, key) uses the primary key; the journal's UNIQUE serves per-key
# history. Byte-wise collation ("C" on PostgreSQL, SQLite's BINARY) gives both backends
# the same order and lets a LIKE prefix use the index.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "objects inventory and event journal",
        sqlite=(
            _SQLITE_OBJECTS,
            "CREATE INDEX objects_by_user ON objects (user_id, bucket, key, version_id)",
            # SQLite cannot index arbitrary JSON members; metadata search scans the live
            # rows, which is fine at embedded scale (PostgreSQL gets a GIN index).
            "CREATE INDEX objects_live ON objects (deleted, bucket, key)",
            _SQLITE_JOURNAL,
            "CREATE INDEX journal_by_event_time ON journal (event_time)",
        ),
        postgres=(
            _PG_OBJECTS,
            "CREATE INDEX objects_by_user ON objects (user_id, bucket, key, version_id)",
            "CREATE INDEX objects_by_metadata ON objects USING gin (user_metadata jsonb_path_ops)",
            _PG_JOURNAL,
            "CREATE INDEX journal_by_event_time ON journal (event_time)",
        ),
    ),
    Migration(
        2,
        "processing jobs per object version and processor",
        sqlite=(_SQLITE_JOBS, "CREATE INDEX jobs_by_status ON jobs (status, updated_at)"),
        postgres=(_PG_JOBS, "CREATE INDEX jobs_by_status ON jobs (status, updated_at)"),
    ),
    Migration(
        3,
        "job leases: the runner of an unfinished job and until when it holds it",
        sqlite=(
            "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
            "ALTER TABLE jobs ADD COLUMN lease_expires_at TEXT",
            _JOBS_LEASED,
        ),
        postgres=(
            "ALTER TABLE jobs ADD COLUMN lease_owner text",
            "ALTER TABLE jobs ADD COLUMN lease_expires_at timestamptz",
            _JOBS_LEASED,
        ),
    ),
    Migration(
        4,
        "transcripts for full-text search",
        sqlite=_SQLITE_TRANSCRIPTS,
        postgres=_PG_TRANSCRIPTS,
    ),
    Migration(
        5,
        "a layout designed for writing: clustered objects, sequencer-led journal identity,"
        " per-key history chains",
        sqlite=_SQLITE_V5,
        postgres=_PG_V5,
    ),
)

_SQLITE_BOOKKEEPING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)"""

_PG_BOOKKEEPING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL
)"""


def pending(
    applied: Iterable[int], migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[Migration]:
    """The migrations not yet applied, in version order.

    Raises IndexWriteFailed when the database has a version this code does not know: a
    newer consumer migrated it, and running older code against it could corrupt it.
    """
    done = set(applied)
    unknown = done - {m.version for m in migrations}
    if unknown:
        raise IndexWriteFailed(
            f"index schema has version(s) {sorted(unknown)} unknown to this consumer "
            f"(it knows up to {migrations[-1].version}); upgrade the consumer"
        )
    return sorted((m for m in migrations if m.version not in done), key=lambda m: m.version)


def migrate_sqlite(
    conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Apply pending migrations on an autocommit connection (in the thread that owns it);
    the versions applied.

    Raises sqlite3 errors untranslated; the caller translates them.
    """
    # IMMEDIATE takes the write lock before reading schema_migrations, so a concurrent
    # starter waits (busy_timeout) instead of applying the same migration twice.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SQLITE_BOOKKEEPING)
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
        todo = pending((row[0] for row in rows), migrations)
        for migration in todo:
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, _now_text()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return [m.version for m in todo]


async def migrate_postgres(conn: Any, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply pending migrations with an asyncpg connection; the versions applied.

    Raises asyncpg errors untranslated; the caller translates them.
    """
    async with conn.transaction():
        # Held until commit: a second process blocks here, then sees the versions applied.
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *PG_MIGRATION_LOCK)
        await conn.execute(_PG_BOOKKEEPING)
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        todo = pending((row["version"] for row in rows), migrations)
        for migration in todo:
            for statement in migration.postgres:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at)"
                " VALUES ($1, $2, $3)",
                migration.version,
                migration.description,
                datetime.now(UTC),
            )
    return [m.version for m in todo]


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
