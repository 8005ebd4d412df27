"""The SQLite index's WAL is copied into its main file by a thread of its own, started by
the first write and ended by ``close``."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

from structlog.testing import capture_logs

from consumer.index.sqlite import SqliteIndex
from consumer.index.wal_checkpoints import _checkpoint
from tests.index.factories import event

_THREAD_NAME = "sqlite-checkpoint"


def _checkpointers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == _THREAD_NAME]


async def _grows_past(path: Path, size: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(os.path.getsize, path) > size:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_committed_pages_reach_the_main_file_while_the_index_stays_open(
    tmp_path: Path,
) -> None:
    """The writer's own checkpoint waits for ~100,000 pages in the log: a few batches
    reach the database file only through the thread."""
    path = tmp_path / "index.sqlite3"
    store = SqliteIndex(path)
    await store.start()
    try:
        schema_only = path.stat().st_size
        for batch in range(4):
            await store.apply_batch(
                [
                    (event(seq=batch * 1_000 + n, key=f"user_{n % 7}/{batch}-{n}.ogg"), None)
                    for n in range(500)
                ]
            )
        # 2,000 objects and their journal entries: far more than a few pages.
        assert await _grows_past(path, schema_only + 200 * 4096)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM journal").fetchone() == (2_000,)


async def test_a_store_that_only_reads_starts_no_thread_and_close_ends_it(
    tmp_path: Path,
) -> None:
    before = len(_checkpointers())
    store = SqliteIndex(tmp_path / "index.sqlite3")
    await store.start()
    try:
        await store.counts()
        assert len(_checkpointers()) == before, "started by reads"
        await store.apply_batch([(event(seq=1), None)])
        assert len(_checkpointers()) == before + 1
    finally:
        await store.close()
    assert len(_checkpointers()) == before, "left running by close"


def test_a_failing_checkpoint_is_logged_once_until_one_succeeds(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "index.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE t (x)")  # a checkpoint inside a transaction fails
    with capture_logs() as logs:
        assert _checkpoint(conn, failed_before=False)
        assert _checkpoint(conn, failed_before=True)
        conn.execute("COMMIT")
        assert not _checkpoint(conn, failed_before=True)
    conn.close()
    assert [entry["event"] for entry in logs] == ["index.checkpoint_failed"]
