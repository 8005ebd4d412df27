"""The metadata index: live object inventory and event journal, on SQLite or PostgreSQL.

``open_index(settings.index_url)`` picks the backend; the store is started with
``await store.start()`` or ``async with store:``. The package, by part:

* ``records`` — the rows and values (ObjectRecord, JournalRecord, JobRecord, …);
* ``store`` — the ``IndexStore`` Protocol callers use, and the ``BatchWriter`` steps;
* ``decisions`` — the pure rules both backends share (ordering, tombstones, idempotent
  batches, job claims);
* ``sql`` — the SQL both dialects share, the builders of WHERE clauses, the ``Dialect``
  (the fragments in which the two differ) and the ``RowReader`` (rows back to records);
* ``sql_index`` — ``SqlIndex``, every IndexStore operation written once over a dialect
  and the few hooks a backend fills in (connections, transactions, locking, errors);
* ``sqlite`` / ``postgres`` — the two backends, ``SqlIndex`` subclasses holding only
  what is their own (and the batch's set-wise ``BatchWriter``); ``migrations`` — their
  schemas.

Its errors (IndexUnavailable, IndexWriteFailed, LeaseLost) live in ``consumer.errors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from consumer.errors import ConfigError, IndexUnavailable, IndexWriteFailed
from consumer.index.decisions import Action, StoredState, decide
from consumer.index.migrations import MIGRATIONS, Migration
from consumer.index.postgres import PostgresIndex
from consumer.index.records import (
    BatchResult,
    GrowthRow,
    JobOutcome,
    JobRecord,
    JobRequest,
    JobStatus,
    JournalRecord,
    KafkaPosition,
    ObjectQuery,
    ObjectRecord,
    Transcript,
    UsageRow,
    Versions,
)
from consumer.index.sqlite import SqliteIndex
from consumer.index.store import IndexStore

__all__ = [
    "MIGRATIONS",
    "Action",
    "BatchResult",
    "GrowthRow",
    "IndexStore",
    "IndexUnavailable",
    "IndexWriteFailed",
    "JobOutcome",
    "JobRecord",
    "JobRequest",
    "JobStatus",
    "JournalRecord",
    "KafkaPosition",
    "Migration",
    "ObjectQuery",
    "ObjectRecord",
    "PostgresIndex",
    "SqliteIndex",
    "StoredState",
    "Transcript",
    "UsageRow",
    "Versions",
    "decide",
    "open_index",
    "sqlite_path",
]

_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
_SQLITE_SCHEME: Final = "sqlite:///"
POSTGRES_CONNECT_TIMEOUT_S: Final = 10.0


def open_index(url: str, *, command_timeout_s: float = 60.0) -> IndexStore:
    """An unstarted store for ``url`` (the INDEX_URL setting); ``command_timeout_s``
    (INDEX_COMMAND_TIMEOUT_S) bounds each PostgreSQL statement and each new connection.

    ``postgresql://…`` / ``postgres://…`` → PostgresIndex; ``sqlite:///relative.db``,
    ``sqlite:////abs/path.db`` or a bare file path → SqliteIndex.
    Raises ConfigError for anything else.
    """
    if url.startswith(_POSTGRES_SCHEMES):
        # A new connection over a stalled network waits no longer than a statement would.
        return PostgresIndex(
            url,
            command_timeout_s=command_timeout_s,
            connect_timeout_s=min(POSTGRES_CONNECT_TIMEOUT_S, command_timeout_s),
        )
    return SqliteIndex(sqlite_path(url))


def sqlite_path(url: str) -> Path:
    """The file named by a ``sqlite:///`` URL or a bare path. Raises ConfigError."""
    if url.startswith(_SQLITE_SCHEME):
        # SQLAlchemy's convention: three slashes then the path, so an absolute path
        # has four ("sqlite:////var/lib/index.db").
        path = url[len(_SQLITE_SCHEME) :]
    elif "://" in url or url.startswith("sqlite:"):
        scheme = url.split(":", 1)[0]
        raise ConfigError(
            f"INDEX_URL scheme {scheme!r} is not supported: use sqlite:///path or postgresql://"
        )
    else:
        path = url
    if not path.strip() or path == ":memory:":
        raise ConfigError("INDEX_URL must name a database file (or a postgresql:// URL)")
    return Path(path)
