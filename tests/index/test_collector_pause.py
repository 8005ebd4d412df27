"""The cyclic garbage collector is paused while a batch is written, and only then."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from consumer.index.records import BatchResult, Item
from consumer.index.sqlite import SqliteIndex
from consumer.index.threads import collector_paused
from tests.index.factories import event


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was_on = gc.isenabled()
    yield
    if was_on:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_inside_and_on_again_after() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_overlapping_pauses_resume_the_collector_after_the_last() -> None:
    gc.enable()
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled(), "resumed while a batch was still under way"
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_someone_turned_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_failed_batch_resumes_the_collector() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the batch failed")
    assert gc.isenabled()


def test_pauses_from_many_threads_leave_the_collector_on() -> None:
    gc.enable()
    start = threading.Barrier(8)

    def batches() -> None:
        start.wait()
        for _ in range(500):
            with collector_paused():
                pass

    threads = [threading.Thread(target=batches) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gc.isenabled()


async def test_apply_batch_runs_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause covers the batch's whole write, and ends with it."""
    seen: list[bool] = []
    write = SqliteIndex._apply

    async def observed(self: SqliteIndex, items: Sequence[Item], now: datetime) -> BatchResult:
        seen.append(gc.isenabled())
        return await write(self, items, now)

    monkeypatch.setattr(SqliteIndex, "_apply", observed)
    store = SqliteIndex(tmp_path / "index.sqlite3")
    await store.start()
    gc.enable()
    try:
        result = await store.apply_batch([(event(seq=1), None)])
    finally:
        await store.close()
    assert (seen, result.journaled) == ([False], 1)
    assert gc.isenabled()
