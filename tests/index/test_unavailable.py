"""IndexUnavailable (retriable) when the database cannot be reached or stays locked."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from consumer.errors import ConnectionFailed
from consumer.index import IndexUnavailable, IndexWriteFailed, PostgresIndex, SqliteIndex
from tests.conftest import Backend
from tests.index.factories import event


def closed_port() -> int:
    # Bind to get a free port, then close it: nothing listens there afterwards.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_postgres_on_a_closed_port_is_unavailable() -> None:
    store = PostgresIndex(
        f"postgresql://postgres:secret@127.0.0.1:{closed_port()}/index", connect_timeout_s=3
    )
    with pytest.raises(IndexUnavailable) as raised:
        await store.start()
    assert isinstance(raised.value, ConnectionFailed)
    assert raised.value.retriable
    assert raised.value.__cause__ is not None
    assert "secret" not in str(raised.value)
    await store.close()  # closing a store that never started is fine


@pytest.mark.parametrize(
    "message",
    [
        "cannot switch to state 15; another operation (2) is in progress",
        'cannot switch to state 11; protocol is in the "failed" state',
    ],
)
def test_a_postgres_connection_cut_while_idle_is_unavailable(message: str) -> None:
    # At a shutdown PostgreSQL sends each idle connection a FATAL error, then closes it.
    # asyncpg, expecting nothing while idle, leaves the protocol in an error state, and a
    # statement sent on that connection before its close is noticed fails inside asyncpg
    # with this (seen in the fault suite, under load): an outage to wait out, not an
    # error that ends the consumer.
    store = PostgresIndex("postgresql://127.0.0.1:1/index")
    with pytest.raises(IndexUnavailable) as raised, store._translated():
        raise asyncpg.InternalClientError(message)
    assert raised.value.retriable
    assert isinstance(raised.value.__cause__, asyncpg.InternalClientError)


def test_other_asyncpg_client_errors_stay_permanent() -> None:
    store = PostgresIndex("postgresql://127.0.0.1:1/index")
    with pytest.raises(IndexWriteFailed) as raised, store._translated():
        raise asyncpg.InternalClientError("unexpected codec state")
    assert not raised.value.retriable


class TestSqliteLocked:
    async def test_write_waits_busy_timeout_then_is_unavailable(self, tmp_path: Path) -> None:
        path = tmp_path / "index.sqlite3"
        async with SqliteIndex(path, busy_timeout_s=0.2) as store:
            holder = sqlite3.connect(path, isolation_level=None)
            try:
                holder.execute("BEGIN EXCLUSIVE")  # the write lock, held past busy_timeout
                started = time.monotonic()
                with pytest.raises(IndexUnavailable, match="locked") as raised:
                    await store.apply_batch([(event(seq=1), None)])
                assert time.monotonic() - started >= 0.15  # it did wait first
                assert raised.value.retriable
                await store.ping()  # WAL: reading still works while a writer holds the lock
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            # Retrying after the lock is gone succeeds: nothing half-written remained.
            result = await store.apply_batch([(event(seq=1), None)])
            assert (result.journaled, result.objects_changed) == (1, 1)

    async def test_start_while_locked_is_unavailable(self, tmp_path: Path) -> None:
        path = tmp_path / "index.sqlite3"
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            store = SqliteIndex(path, busy_timeout_s=0.1)
            with pytest.raises(IndexUnavailable):
                await store.start()
            await store.close()
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    async def test_unopenable_path_is_unavailable(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        store = SqliteIndex(blocker / "index.sqlite3")
        with pytest.raises(IndexUnavailable):
            await store.start()


async def test_a_file_that_is_not_a_database_is_a_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    path.write_bytes(b"this is not an SQLite database, and retrying will not make it one" * 20)
    store = SqliteIndex(path)
    with pytest.raises(IndexWriteFailed) as raised:
        await store.start()
    assert not raised.value.retriable


@pytest.mark.integration
@pytest.mark.parametrize("backend_name", ["postgres"])
@pytest.mark.parametrize("inside", ["after its statements", "while a statement fails"])
async def test_postgres_connection_closed_inside_a_transaction_is_unavailable(
    backend: Backend, inside: str
) -> None:
    # What a PostgreSQL shutdown does to a batch in flight: the server closes the
    # connection between two statements of its transaction. asyncpg's transaction exit then
    # raises InterfaceError ("the underlying connection is closed"); that is an outage, to
    # be waited out, not a permanent error that stops the consumer.
    async with backend.new_store() as store:
        assert isinstance(store, PostgresIndex)
        with pytest.raises(IndexUnavailable) as raised:
            await _transaction_cut_off(
                store, backend.url, statement_after=inside != "after its statements"
            )
        assert raised.value.retriable
        # The pool replaces the connection: the next batch goes through.
        result = await store.apply_batch([(event(seq=1), None)])
        assert result.journaled == 1


async def _transaction_cut_off(
    store: PostgresIndex, admin_url: str, *, statement_after: bool
) -> None:
    """A batch's transaction whose connection the server terminates halfway through."""
    async with store._exclusive([("bkt", "user_1/a.ogg")]) as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        if statement_after:
            await conn.execute("SELECT 1")
        else:
            await asyncio.sleep(0.2)  # the client sees the connection close
