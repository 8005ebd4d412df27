"""The SQLite index's write-ahead log copied into its main file by a thread of its own.

In WAL mode a commit appends the pages it changed to the ``-wal`` file; a *checkpoint*
copies them into the database file, and once all of them are copied the next write
starts the log again from its beginning. Left to SQLite, the connection that commits runs
the checkpoint itself, between two of its transactions, once the log holds
``wal_autocheckpoint`` pages: the index's batches waited for it, and meanwhile the log
grew to hundreds of MB. Every read of a page searches the log's index first, table by
table, so a long log made each lookup of the batch dearer.

``WalCheckpointer`` runs a PASSIVE checkpoint (it copies what no reader still needs and
never waits for a lock) on a connection of its own, in a daemon thread, after the
writer's commits, at most every ``min_interval_s``: the copying and its fsync happen
while the writer goes on with its next batch, and the log is started again every few
batches instead of every ~400 MB. Measured (the index alone, batches of 2,000,
alternated pairs, docs/benchmarks.md): 200k events written in 7 % less time over 10
pairs (8 of them faster, the median pair 0.97 of the time), 1M in about the same (4
pairs, 0.93–1.03); the log at 16–36 MB instead of ~400 MB, and the slowest batch of
200k at 228–275 ms instead of 312–355.

The writer keeps its own ``wal_autocheckpoint`` as the safety net: if this thread falls
behind (or its checkpoints keep failing), the writer checkpoints the log itself once it
holds that many pages, as it did without the thread.

The thread starts at the first ``nudge`` (a connection that only reads never starts it)
and ends at ``stop``. Writes never wait for it: a nudge only sets an event.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger(__name__)

# Between two checkpoints at least this long: one after every commit would fsync the file
# as often as the writer fsyncs the log. Checkpoints every 50 ms (200k events, polled in
# the experiment that chose the figure) started the log again within ~4,000 pages, every
# two or three batches of 2,000 events; every 500 ms let it grow to 54,000–98,000 pages,
# as with no thread at all, and were no faster.
MIN_INTERVAL_S: Final = 0.05


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite file at ``path`` in a thread of its own.

    ``nudge`` (after a commit) and ``stop`` are called from one thread, the one that owns
    the writing connection.
    """

    def __init__(self, path: Path, *, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self._path = path
        self._min_interval_s = min_interval_s
        self._nudged = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"WalCheckpointer({str(self._path)!r})"

    def nudge(self) -> None:
        """A commit added pages to the log: copy them soon."""
        if self._stopping.is_set():
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
            self._thread.start()
        self._nudged.set()

    def stop(self) -> None:
        """End the thread once its checkpoint under way (if any) is done."""
        self._stopping.set()
        self._nudged.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("index.checkpointer_unavailable", error=str(exc))
            return
        failed = False
        try:
            while True:
                self._nudged.wait()
                if self._stopping.is_set():
                    return
                self._nudged.clear()
                failed = _checkpoint(conn, failed)
                self._stopping.wait(self._min_interval_s)
        finally:
            conn.close()


def _checkpoint(conn: sqlite3.Connection, failed_before: bool) -> bool:
    """One PASSIVE checkpoint; whether it failed. A failure is logged once until one
    succeeds again: the writer's own checkpoints still run meanwhile."""
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:
        if not failed_before:
            log.warning("index.checkpoint_failed", error=str(exc))
        return True
    return False
