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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiosqlite

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


async def migrate_sqlite(conn: aiosqlite.Connection) -> list[int]:
    """Apply pending migrations on an autocommit connection; the versions applied.

    Raises sqlite3 errors untranslated; the caller translates them.
    """
    # IMMEDIATE takes the write lock before reading schema_migrations, so a concurrent
    # starter waits (busy_timeout) instead of applying the same migration twice.
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.execute(_SQLITE_BOOKKEEPING)
        rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
        todo = pending(row[0] for row in rows)
        for migration in todo:
            for statement in migration.sqlite:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, _now_text()),
            )
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return [m.version for m in todo]


async def migrate_postgres(conn: Any) -> list[int]:
    """Apply pending migrations with an asyncpg connection; the versions applied.

    Raises asyncpg errors untranslated; the caller translates them.
    """
    async with conn.transaction():
        # Held until commit: a second process blocks here, then sees the versions applied.
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *PG_MIGRATION_LOCK)
        await conn.execute(_PG_BOOKKEEPING)
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        todo = pending(row["version"] for row in rows)
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
