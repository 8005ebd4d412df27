"""The threads the index's writes run in, away from the event loop's thread.

A batch's database work (its planning in Python between statements too) runs in a
thread of its own, fed decoded batches, while the event loop decodes the next one: SQLite
in the one thread that owns its connection (sqlite.py), PostgreSQL in an event loop of its
own (``LoopThread``) with a pool of its own. While a batch is written the cyclic garbage
collector is paused (``collector_paused``), in whichever process writes it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

T = TypeVar("T")

# The longest a thread that wants the GIL waits before the running one must hand it over
# (Python's default: 5 ms). A database thread gives the GIL away for each step of a
# statement (or each read of the socket) and wants it back right after; while the event
# loop's thread runs Python, every such step waited up to the interval. Multi-row
# statements make those steps few; a shorter interval makes each wait short (measured
# beside a busy Python thread: a 2,000-event SQLite batch 2.9x faster at 0.5 ms than at
# 5 ms). Process-wide, only ever lowered.
_GIL_SWITCH_INTERVAL_S: Final = 0.0005


def hand_the_gil_over_promptly() -> None:
    if sys.getswitchinterval() > _GIL_SWITCH_INTERVAL_S:
        sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)


# Batches under way now, and whether the collector was on when the first of them began.
_batches_under_way = 0
_collector_was_on = False
_collector_lock = threading.Lock()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a batch is written, back on after.

    A batch allocates tens of thousands of short-lived containers (rows, parameters,
    records), freed by their reference counts as soon as the batch is done: none of them is
    garbage that only a collection finds. Yet every 700 allocations start a collection, and
    every so often a full one walks every object of the process. Measured (SQLite, 200k
    events in batches of 2,000, the collector timed by its callbacks): 1.5–1.7 s of a
    15–17 s write went to collections, and the write took 0.83–1.06 of its time with
    the collector paused (4 pairs). Paused for the batch, the collector catches up at the
    first allocation after it.

    Process-wide and counted: batches that overlap (two indexes in one process) resume it
    once, after the last; a collector someone else turned off stays off.
    """
    global _batches_under_way, _collector_was_on
    with _collector_lock:
        if _batches_under_way == 0:
            _collector_was_on = gc.isenabled()
            gc.disable()
        _batches_under_way += 1
    try:
        yield
    finally:
        with _collector_lock:
            _batches_under_way -= 1
            if _batches_under_way == 0 and _collector_was_on:
                gc.enable()


class LoopThread:
    """An asyncio event loop running in a daemon thread of its own.

    ``run`` hands it a coroutine and waits for its result from the caller's loop; a
    cancelled caller cancels the coroutine there too. Objects bound to a loop (an asyncpg
    pool) are made and used only through ``run``.
    """

    def __init__(self, name: str) -> None:
        hand_the_gil_over_promptly()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    async def stop(self) -> None:
        """Stop the loop once what it runs now is done, and wait for its thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()
