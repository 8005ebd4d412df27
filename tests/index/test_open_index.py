"""open_index's URL handling and the migration list, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.errors import ConfigError
from consumer.index import IndexWriteFailed, PostgresIndex, SqliteIndex, open_index
from consumer.index.migrations import MIGRATIONS, Migration, pending


class TestOpenIndex:
    @pytest.mark.parametrize(
        ("url", "path"),
        [
            ("sqlite:///relative.db", Path("relative.db")),
            ("sqlite:///dir/sub/index.sqlite3", Path("dir/sub/index.sqlite3")),
            ("sqlite:////abs/path.db", Path("/abs/path.db")),
            ("index.db", Path("index.db")),
            ("/var/lib/voxpersona/index.db", Path("/var/lib/voxpersona/index.db")),
        ],
    )
    def test_sqlite_urls(self, url: str, path: Path) -> None:
        store = open_index(url)
        assert isinstance(store, SqliteIndex)
        assert store.path == path

    @pytest.mark.parametrize(
        "url", ["postgresql://u:secret@db:5432/index", "postgres://u:secret@db/index"]
    )
    def test_postgres_urls(self, url: str) -> None:
        store = open_index(url)
        assert isinstance(store, PostgresIndex)
        assert "secret" not in repr(store)

    @pytest.mark.parametrize(
        "url", ["mysql://db/index", "sqlite://host/db", "sqlite:///", ":memory:", "", "  "]
    )
    def test_unsupported_urls(self, url: str) -> None:
        with pytest.raises(ConfigError):
            open_index(url)


class TestMigrationList:
    def test_versions_increase_from_one_without_gaps(self) -> None:
        assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))

    def test_every_migration_has_both_dialects(self) -> None:
        # Not as many statements each: version 5 rebuilds SQLite's tables, and only adds
        # indexes on PostgreSQL.
        for migration in MIGRATIONS:
            assert migration.sqlite
            assert migration.postgres

    def test_pending_skips_applied_and_keeps_order(self) -> None:
        latest = len(MIGRATIONS)
        later = Migration(latest + 1, "later", ("SELECT 1",), ("SELECT 1",))
        extra = (*MIGRATIONS, later)
        assert [m.version for m in pending([], extra)] == [*range(1, latest + 1), latest + 1]
        assert [m.version for m in pending(range(1, latest + 1), extra)] == [latest + 1]
        assert pending(range(1, latest + 2), extra) == []

    def test_pending_refuses_a_schema_newer_than_the_code(self) -> None:
        with pytest.raises(IndexWriteFailed, match="upgrade the consumer"):
            pending([1, 99])
