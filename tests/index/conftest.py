"""Fixtures for the index contract suite: one fresh database per test, on each backend.

SQLite: a file in tmp_path. PostgreSQL: a new database ``test_<uuid>`` on the session's
server (tests/conftest.py ``stack``), dropped after the test, so tests never share state.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from consumer.index import IndexStore, open_index, sqlite_path
from tests.conftest import StackEndpoints


@dataclass(frozen=True)
class Backend:
    """Where one test's index lives; ``new_store()`` gives another, unstarted, handle."""

    name: str
    url: str

    def new_store(self) -> IndexStore:
        return open_index(self.url)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a raw query, bypassing the store (to look at bookkeeping tables)."""
        if self.name == "sqlite":
            with sqlite3.connect(sqlite_path(self.url)) as conn:
                return list(conn.execute(sql).fetchall())
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_admin_url(request: pytest.FixtureRequest, backend_name: str) -> str | None:
    # Only the PostgreSQL runs need the stack; resolved here, in a synchronous fixture,
    # because starting the stack must not happen inside a running event loop.
    if backend_name != "postgres":
        return None
    stack: StackEndpoints = request.getfixturevalue("stack")
    return stack.postgres_url


@pytest.fixture
async def backend(
    backend_name: str, pg_admin_url: str | None, tmp_path: Path
) -> AsyncIterator[Backend]:
    if pg_admin_url is None:
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'index.sqlite3'}")
        return
    name = f"test_{uuid.uuid4().hex}"
    # Identifiers cannot be bound parameters; the name is generated above, not input.
    await _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield Backend("postgres", urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl())
    finally:
        await _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[IndexStore]:
    async with backend.new_store() as started:
        yield started


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
