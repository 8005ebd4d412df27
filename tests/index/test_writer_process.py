"""The indexer's writer process (consumer/index/writer_process.py): a batch travels to a
child process and back unchanged, the child writes exactly what the store writes in its
own thread, a staged batch is written ahead only right after a batch asked for and
written (else when asked for), a child killed with -9 is replaced, and a child never
outlives its parent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from consumer.errors import IndexUnavailable, IndexWriteFailed
from consumer.events import EventKind
from consumer.index import IndexStore, ObjectQuery, open_index, sqlite_path
from consumer.index.records import BatchResult, Item, KafkaPosition
from consumer.index.writer_process import (
    WriterProcess,
    WriterStopped,
    decode_items,
    decode_start,
    encode_items,
    encode_reply,
    encode_start,
    reply_result,
)
from tests.conftest import Backend
from tests.index.factories import T0, event


def _batches() -> list[list[Item]]:
    """Three batches over a few keys: writes, a removal, a metadata change, a redelivery
    and an event older than the row it reaches."""
    at = KafkaPosition
    first = [
        (event(seq=1, key="user_1/a.ogg", metadata={"lang": "ru"}, size=10), at("t", 0, 1)),
        (event(seq=2, key="user_2/ü b.ogg", version_id="v1", size=20), at("t", 1, 7)),
        (event(EventKind.CREATED, seq=3, key="other/x.wav", user_id=None), None),
    ]
    second = [
        first[0],  # redelivered
        (event(EventKind.REMOVED, seq=4, key="user_1/a.ogg"), at("t", 0, 2)),
        (event(EventKind.METADATA_CHANGED, seq=5, key="other/x.wav", user_id=None), None),
    ]
    third: list[Item] = [
        (event(seq=3, key="user_1/a.ogg", at=T0 - timedelta(days=1)), at("t", 0, 3)),
        (event(seq=6, key="user_2/c.ogg", content_type="audio/ogg", size=0), at("t", 2, 0)),
    ]
    return [first, second, third]


async def _rows(store: IndexStore) -> list[tuple[object, ...]]:
    rows = await store.list_objects(ObjectQuery(include_deleted=True, limit=100))
    return [
        (r.bucket, r.key, r.version_id, r.size, r.etag, r.deleted, r.sequencer, r.metadata)
        for r in rows
    ]


@pytest.fixture
async def writer(backend: Backend) -> AsyncIterator[WriterProcess]:
    # The parent has started the index (its migrations done) before the child opens it.
    store = backend.new_store()
    await store.start()
    process = WriterProcess(backend.url, command_timeout_s=30)
    try:
        yield process
    finally:
        await process.close()
        await store.close()


def test_a_batch_travels_unchanged() -> None:
    items = [item for batch in _batches() for item in batch]
    # The child makes EventFacts of what it is sent (cheaper than ObjectEvents).
    assert decode_items(encode_items(items)) == [(e.facts(), at) for e, at in items]


def test_answers_travel_unchanged() -> None:
    assert reply_result(encode_reply(BatchResult(3, 1, 2, 0))) == BatchResult(3, 1, 2, 0)
    with pytest.raises(IndexUnavailable, match="locked"):
        reply_result(encode_reply(IndexUnavailable("database is locked")))
    # A defect of the child is no class of ours: a write that failed, with its reason.
    with pytest.raises(IndexWriteFailed, match="KeyError: 'x'"):
        reply_result(encode_reply(KeyError("x")))


def test_a_field_of_the_wrong_type_fails_the_batch() -> None:
    (item,) = decode_items(encode_items(_batches()[0][:1]))
    wrong = item[0]._replace(size="ten bytes")  # as a defect of the parent would send it
    with pytest.raises(msgspec.ValidationError, match=r"int \| null.*\$\[0\]\[0\]\[7\]"):
        decode_items(encode_items([(wrong, item[1])]))


def test_the_start_travels_unchanged() -> None:
    setup = ("info", True, ("s3cr3t", "p@ss"))
    assert decode_start(encode_start("sqlite:///x", 2.5, setup)) == ("sqlite:///x", 2.5, setup)
    assert decode_start(encode_start("sqlite:///x", 30, None)) == ("sqlite:///x", 30, None)


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_the_index_url_reaches_the_child_by_its_socket_only(
    writer: WriterProcess, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The URL holds the database's password: not in the child's command line or
    # environment, which other users of the machine can read (ps, /proc).
    password = backend.url.split("@", 1)[0].rsplit(":", 1)[1]
    assert len(password) >= 8
    # What the tests' own environment already holds (the stack's env loaded in the shell)
    # the child inherits like any child: the package must add nothing.
    for name, value in list(os.environ.items()):
        if password in value:
            monkeypatch.delenv(name)
    await writer.start()
    pid = writer.pid
    assert pid is not None
    for exposed in ("cmdline", "environ"):
        assert password.encode() not in _read_proc(pid, exposed)
    assert (await writer.apply_batch(_batches()[0])).journaled == 3


async def test_the_child_writes_what_the_store_writes(
    writer: WriterProcess, backend: Backend, tmp_path: Path
) -> None:
    by_process = [await writer.apply_batch(batch) for batch in _batches()]
    reference = open_index(f"sqlite:///{tmp_path / 'reference.sqlite3'}")
    await reference.start()
    try:
        by_thread = [await reference.apply_batch(batch) for batch in _batches()]
        expected = await _rows(reference)
    finally:
        await reference.close()
    assert by_process == by_thread
    assert by_process[1].duplicates == 1
    assert by_process[2].stale_ignored == 1
    store = backend.new_store()
    await store.start()
    try:
        assert await _rows(store) == expected
    finally:
        await store.close()


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_a_staged_batch_is_applied_only_when_asked(
    writer: WriterProcess, backend: Backend
) -> None:
    dropped, sent_whole, staged = _batches()
    writer.stage(dropped)  # fetched before a rebalance, say: never applied
    assert (await writer.apply_batch(sent_whole)).journaled == 3
    writer.stage(staged)
    assert (await writer.apply_batch(staged)).journaled == 2
    store = backend.new_store()
    await store.start()
    try:
        keys = {row[1] for row in await _rows(store)}
    finally:
        await store.close()
    assert "user_2/ü b.ogg" not in keys  # only in the dropped batch
    assert {"user_1/a.ogg", "other/x.wav", "user_2/c.ogg"} <= keys


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_the_batch_staged_after_an_applied_one_is_written_before_it_is_asked(
    writer: WriterProcess, backend: Backend
) -> None:
    first, second, _ = _batches()
    await writer.start()
    # Another writer holds the file while the child applies the first batch, so the second
    # is staged (and decoded) by the time the first is answered, as in the indexer.
    with _file_held(backend):
        applying = await _ask_then_stage(writer, first, second)
        await asyncio.sleep(0.3)
    assert (await applying).journaled == 3
    # Not asked for yet, the second batch is written: the removal it carries shows.
    assert await _eventually_deleted(backend, "user_1/a.ogg")
    # Its answer is the one written ahead (not a second write, which would journal nothing).
    result = await writer.apply_batch(second)
    assert (result.journaled, result.duplicates) == (2, 1)


@contextlib.contextmanager
def _file_held(backend: Backend) -> Iterator[None]:
    """Another connection holds the SQLite file's write lock for the block."""
    holder = sqlite3.connect(sqlite_path(backend.url), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.close()  # rolls back


async def _ask_then_stage(
    writer: WriterProcess, first: list[Item], second: list[Item]
) -> asyncio.Future[BatchResult]:
    """``first`` staged and asked for (the ask sent), then ``second`` staged behind it, as
    the indexer does; the first batch's answer to come."""
    writer.stage(first)
    applying = asyncio.ensure_future(writer.apply_batch(first))
    await asyncio.sleep(0)  # the ask for the first batch goes out
    writer.stage(second)
    return applying


async def _eventually_deleted(backend: Backend, key: str, timeout_s: float = 10.0) -> bool:
    store = backend.new_store()
    await store.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = await store.get_object("bkt", key)
            if found is not None and found.deleted:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await store.close()


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_after_a_failed_batch_the_staged_one_waits_to_be_asked(
    writer: WriterProcess, backend: Backend
) -> None:
    first, second, _ = _batches()
    await writer.start()
    with _file_held(backend):  # past the child's busy timeout: the first batch fails
        applying = await _ask_then_stage(writer, first, second)
        with pytest.raises(IndexUnavailable):
            await applying
    await asyncio.sleep(0.5)
    assert not await _eventually_deleted(backend, "user_1/a.ogg", timeout_s=0.2)
    # Retried first, as the indexer does, then the staged one when asked: in their order.
    assert (await writer.apply_batch(first)).journaled == 3
    assert (await writer.apply_batch(second)).journaled == 2


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_a_child_killed_9_is_replaced(writer: WriterProcess) -> None:
    first, second, third = _batches()
    await writer.start()  # ahead of the first batch, as the indexer does
    started = writer.pid
    await writer.apply_batch(first)
    killed = writer.pid
    assert killed == started
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    writer.stage(second)  # staged with the dying child
    try:
        result = await writer.apply_batch(second)
    except WriterStopped:  # the child was seen dying: the indexer retries, as here
        result = await writer.apply_batch(second)
    assert result.journaled == 2
    assert writer.pid not in (None, killed)
    assert (await writer.apply_batch(third)).journaled == 2
    await writer.close()
    assert writer.pid is None
    await writer.close()  # closing again is harmless


async def test_an_index_the_child_cannot_open_is_unavailable() -> None:
    # Nothing listens on port 1: the child's start fails, and says why.
    writer = WriterProcess("postgresql://u:secret@127.0.0.1:1/db", command_timeout_s=5)
    try:
        await writer.start()  # started ahead: only logged, the first batch says why
        assert writer.pid is None
        with pytest.raises(IndexUnavailable) as raised:
            await writer.apply_batch(_batches()[0])
        assert "secret" not in str(raised.value)
        assert writer.pid is None
    finally:
        await writer.close()


_ORPHAN = """
import asyncio, sys
from consumer.index import open_index
from consumer.index.writer_process import WriterProcess
from tests.index.test_writer_process import _batches

async def main():
    store = open_index(sys.argv[1])
    await store.start()
    writer = WriterProcess(sys.argv[1], command_timeout_s=30)
    await writer.apply_batch(_batches()[0])
    print("writer", writer.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_the_child_ends_with_its_parent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    command = [sys.executable, "-c", _ORPHAN, url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            lines = iter(parent.stdout.readline, "")
            child = next(int(line.split()[1]) for line in lines if line.startswith("writer "))
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
            deadline = time.monotonic() + 15
            while _alive(child) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(child), "the writer process outlived its parent"
        finally:
            parent.kill()


def _read_proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it has ended, not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
