"""The indexer's batch writes in a process of their own.

A batch's database work is Python as much as SQL: deciding each event, building rows,
between the statements. In a thread of the indexer's process it took turns with the event
loop (fetching, decoding the next batch, the per-event metrics) on one GIL, and the
indexer reached about half of what its index does alone (docs/benchmarks.md). In a process
of its own it has a GIL, and a core, of its own.

``WriterProcess.apply_batch`` is ``IndexStore.apply_batch`` done there: the child (this
module, run by the same interpreter with one end of a socket pair) opens the same index
(``open_index``; the parent has started it, so its migrations are done) and runs the real
``apply_batch``; a batch travels as MessagePack (an event's fields in ObjectEvent's order
and its Kafka position) over the socket, the result or the error comes back. Batches run
one at a time, in the order they were sent.

``stage`` sends the next batch ahead, as soon as it is decoded and while the child still
writes the one before: the child decodes it meanwhile, and ``apply_batch`` of that batch
then only says "apply it". The child does not even wait for that word: once a batch
asked for is answered, the one staged right after it is written at once, its answer kept
for the ask. Between an answer and the next ask the indexer's event loop takes its turns
(the batch's bookkeeping, the next fetch), and the writer waited for them: 1.9–2.2 s of a
14 s run of 200k, timed in the child; 1.0–1.1 s with batches written ahead and the metric
records held off while the next batch is decoded (``DeferredRecords``). A batch written
ahead and then dropped by the parent (fetched before a rebalance) loses nothing and
doubles nothing: its offsets are not committed, so its events come again, and the journal
takes each event once. After a failed batch nothing is written ahead: the failed one is
retried first. A staged batch never asked for is dropped by the child when a later one
is applied.

The child ends when the socket closes: when the parent closes it or dies (kill -9
included). It ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole process
group), so it always ends between two batches' transactions, or loses an uncommitted one
(whose offsets were never committed). A child that died is started again at the next
batch; meanwhile ``apply_batch`` raises IndexUnavailable, which the indexer retries.

``encode_items``, ``decode_items``, ``encode_start``, ``decode_start``, ``encode_reply``
and ``reply_result`` are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from operator import attrgetter
from typing import Final, NamedTuple

import msgspec
import structlog

from consumer import errors
from consumer.events import EventFacts
from consumer.index import IndexStore, open_index
from consumer.index.records import BatchResult, Item, KafkaPosition
from consumer.logs import LoggingSetup, configure_logging, configured_setup

log = structlog.get_logger(__name__)

_VALUES: Final = attrgetter(*EventFacts._fields)
_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder()
# An item as the child has it: its event's fields in a named tuple.
DecodedItem = tuple[EventFacts, KafkaPosition | None]
_ITEMS_DECODER: Final = msgspec.msgpack.Decoder(list[DecodedItem])
# How long a starting child may take to open the index before the batch is retried.
START_TIMEOUT_S: Final = 60.0
# How long ``close`` lets the child finish the batch it writes before killing it (its
# transaction then rolls back; its offsets were never committed).
CLOSE_GRACE_S: Final = 5.0


class WriterStopped(errors.IndexUnavailable):
    """The writer process is not running (it died, or could not start)."""


# --- pure -------------------------------------------------------------------------------


def encode_items(items: Sequence[Item]) -> bytes:
    """A batch as MessagePack: per item, the event's fields and its position (or nil)."""
    return _ENCODER.encode([(_VALUES(event), at) for event, at in items])


def decode_items(payload: bytes) -> list[DecodedItem]:
    """``encode_items``'s batch back: events with the fields sent, as ``EventFacts``
    (cheaper to make than ObjectEvents, and to read: see why there). Decoded by msgspec
    to the named tuples' field types, so a field of the wrong type fails the batch."""
    return _ITEMS_DECODER.decode(payload)


def encode_start(url: str, command_timeout_s: float, logging_setup: LoggingSetup | None) -> bytes:
    """The child's first frame: what ``serve`` needs, the parent's logging setup included."""
    return _ENCODER.encode((url, command_timeout_s, logging_setup))


def decode_start(frame: bytes) -> tuple[str, float, LoggingSetup | None]:
    """``encode_start``'s values back."""
    url, command_timeout_s, setup = _DECODER.decode(frame)
    if setup is None:
        return url, command_timeout_s, None
    level, json_output, secrets = setup
    return url, command_timeout_s, (level, json_output, tuple(secrets))


def encode_reply(outcome: BatchResult | BaseException) -> bytes:
    """The child's answer: a result, or the error as its class name and message. An error
    that is not the package's own (a defect) carries its traceback."""
    if isinstance(outcome, BatchResult):
        return _ENCODER.encode(
            ("ok", outcome.journaled, outcome.duplicates, outcome.objects_changed,
             outcome.stale_ignored)
        )  # fmt: skip
    if isinstance(outcome, errors.ConsumerError):
        return _ENCODER.encode(("error", type(outcome).__name__, str(outcome), ""))
    text = "".join(traceback.format_exception(outcome))
    return _ENCODER.encode(("error", "", f"{type(outcome).__name__}: {outcome}", text))


def reply_result(reply: bytes) -> BatchResult:
    """The result an answer carries; raises the error it carries, as the same class of
    ``consumer.errors`` (IndexWriteFailed for a defect or an unknown class)."""
    kind, *rest = _DECODER.decode(reply)
    if kind == "ok":
        return BatchResult(*rest)
    name, message, child_traceback = rest
    error_class = getattr(errors, name, None) if name else None
    if isinstance(error_class, type) and issubclass(error_class, errors.ConsumerError):
        raise error_class(message)
    if child_traceback:
        log.error("index writer process: unexpected failure", traceback=child_traceback)
    raise errors.IndexWriteFailed(f"index writer process: {message}")


# --- the child --------------------------------------------------------------------------

# Frames to the child: a tag, then a batch id (8 bytes) and/or a payload.
_STAGE: Final = b"S"  # id + payload: decode it, and keep it for an APPLY
_APPLY: Final = b"A"  # id: apply the batch staged with that id
_BATCH: Final = b"B"  # payload: apply this batch
_ID_BYTES: Final = 8


def serve(
    url: str, command_timeout_s: float, pipe: Connection, logging_setup: LoggingSetup | None
) -> None:
    """The child's main: open the index, then apply each batch asked for until the pipe
    closes. Its first answer says whether the index opened. A thread of its
    own reads (and decodes) what comes, so a batch staged ahead is decoded while the
    previous one is written."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if logging_setup is not None:  # the parent's: same format, filters and scrubbing
        level, json_output, secrets = logging_setup
        configure_logging(level, json_output=json_output, secrets=secrets)
    loop = asyncio.new_event_loop()
    store = open_index(url, command_timeout_s=command_timeout_s)
    try:
        loop.run_until_complete(store.start())
    except BaseException as exc:  # told to the parent, which retries or reports it
        pipe.send_bytes(encode_reply(exc))
        return
    staged: dict[int, list[DecodedItem] | Exception] = {}
    asked: queue.SimpleQueue[int | list[DecodedItem] | Exception | None] = queue.SimpleQueue()
    reader = threading.Thread(target=_read, args=(pipe, staged, asked), daemon=True)
    try:
        pipe.send_bytes(encode_reply(BatchResult(0, 0, 0, 0)))
        reader.start()
        ahead: _WrittenAhead | None = None
        while (job := asked.get()) is not None:
            outcome = _answer(loop, store, staged, job, ahead)
            pipe.send_bytes(encode_reply(outcome))
            ahead = None
            if isinstance(job, int) and isinstance(outcome, BatchResult) and asked.empty():
                ahead = _write_ahead(loop, store, staged, job + 1)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: nothing to answer
    finally:
        loop.run_until_complete(store.close())
        loop.close()


class _WrittenAhead(NamedTuple):
    """A staged batch written before it was asked for, and how that went; its items only
    when that failed (they are written again when asked for), else let go at once."""

    batch_id: int
    outcome: BatchResult | Exception
    items: list[DecodedItem] | None


def _answer(
    loop: asyncio.AbstractEventLoop,
    store: IndexStore,
    staged: dict[int, list[DecodedItem] | Exception],
    job: int | list[DecodedItem] | Exception,
    ahead: _WrittenAhead | None,
) -> BatchResult | Exception:
    """The answer to ``job`` (a staged batch's id, a batch sent whole, a bad frame): the
    outcome of the batch written ahead when it is that one and was written, else the
    outcome of writing it now (a batch written ahead in vain is tried again, as asked)."""
    if ahead is not None and ahead.batch_id == job:
        if ahead.items is None:
            return ahead.outcome
        return _applied(loop, store, ahead.items)
    items = _staged_batch(staged, job) if isinstance(job, int) else job
    return _applied(loop, store, items)


def _write_ahead(
    loop: asyncio.AbstractEventLoop,
    store: IndexStore,
    staged: dict[int, list[DecodedItem] | Exception],
    batch_id: int,
) -> _WrittenAhead | None:
    """Write the batch staged as ``batch_id`` now, if it is staged (and decoded)."""
    items = staged.get(batch_id)
    if items is None or isinstance(items, Exception):
        return None  # not here yet, or undecodable: its ask gets the answer
    del staged[batch_id]
    outcome = _applied(loop, store, items)
    return _WrittenAhead(batch_id, outcome, None if isinstance(outcome, BatchResult) else items)


def _applied(
    loop: asyncio.AbstractEventLoop, store: IndexStore, items: list[DecodedItem] | Exception
) -> BatchResult | Exception:
    """``store.apply_batch(items)``'s result, or what it (or decoding the batch) raised:
    every failure is the parent's to handle."""
    if isinstance(items, Exception):
        return items
    try:
        return loop.run_until_complete(store.apply_batch(items))
    except Exception as exc:
        return exc


def _read(
    pipe: Connection,
    staged: dict[int, list[DecodedItem] | Exception],
    asked: queue.SimpleQueue[int | list[DecodedItem] | Exception | None],
) -> None:
    """The child's reader: staged batches decoded into ``staged``, the batches to apply
    (an id, or the batch itself) and the end (None) into ``asked``, in order."""
    while True:
        try:
            frame = pipe.recv_bytes()
        except (EOFError, OSError):  # the parent closed its end, or died: the end
            asked.put(None)
            return
        tag = frame[:1]
        if tag == _STAGE:
            staged[_batch_id(frame)] = _decoded(frame[1 + _ID_BYTES :])
        elif tag == _APPLY:
            asked.put(_batch_id(frame))
        else:
            asked.put(_decoded(frame[1:]) if tag == _BATCH else ValueError(f"frame {tag!r}"))


def _batch_id(frame: bytes) -> int:
    return int.from_bytes(frame[1 : 1 + _ID_BYTES], "big")


def _decoded(payload: bytes) -> list[DecodedItem] | Exception:
    try:
        return decode_items(payload)
    except Exception as exc:  # a defect: the batch's answer says so
        return exc


def _staged_batch(
    staged: dict[int, list[DecodedItem] | Exception], batch_id: int
) -> list[DecodedItem] | Exception:
    """The batch staged as ``batch_id``; every one staged before it is dropped (never to
    be applied: the parent moved on)."""
    # A copy of the ids first: the reader thread adds to ``staged`` meanwhile.
    for older in [k for k in list(staged) if k < batch_id]:
        del staged[older]
    found = staged.pop(batch_id, None)
    if found is None:  # cannot be (the parent checks); retriable, the batch comes whole
        return errors.IndexUnavailable(f"batch {batch_id} was not staged with this process")
    return found


# --- the parent -------------------------------------------------------------------------


class WriterProcess:
    """``apply_batch`` of the index at ``url``, run by a child process (started by
    ``start`` or the first batch, and again after it died). ``stage`` sends the next batch
    ahead. ``close`` ends the child."""

    def __init__(self, url: str, *, command_timeout_s: float) -> None:
        self._url = url
        self._command_timeout_s = command_timeout_s
        # The child is a fresh interpreter running this module: not forked (the indexer's
        # process has threads, which fork must not copy), nor made by multiprocessing's
        # forkserver, which keeps its server (~29 MB) and a resource tracker (~8 MB)
        # running beside the child. Starting takes a few hundred milliseconds, once.
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: Connection | None = None
        self._generation = 0  # children started so far
        self._broken = False  # the answers' end saw the child go: start another
        self._closed = False
        self._last_id = 0
        # The batch staged last (its id and the list itself), and, once it went out, the
        # id and the child (generation) it went to: set and read in the sending thread.
        self._staged: tuple[int, Sequence[Item]] | None = None
        self._staged_with: tuple[int, int] | None = None
        # One thread sends every frame, in order (and starts the child); one reads the
        # answers, in order. Staging ahead needs the two apart: a frame goes out while
        # the answer to the batch before it is awaited.
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer-send")
        self._receiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer-recv")

    def __repr__(self) -> str:  # the URL may hold a password
        return f"WriterProcess(pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """The child's process id; None while none runs."""
        process = self._process
        return process.pid if process is not None and self._running() else None

    def stage(self, items: Sequence[Item]) -> None:
        """Send ``items`` ahead (encoded in the sending thread); ``apply_batch`` of this
        same list then only asks the child to apply it. Never raises: a failure shows at
        the ``apply_batch``, which then sends the batch whole."""
        if not items:
            return
        self._last_id += 1
        batch_id = self._last_id
        self._staged = (batch_id, items)
        self._sender.submit(self._send_staged, batch_id, items)

    async def start(self) -> None:
        """Start the child ahead of the first batch, so that batch does not wait for it. A
        failure is only logged: the first batch starts it again, and says why."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._sender, self._start_if_needed)
        except errors.ConsumerError as exc:
            log.info("index writer process not started yet", error=str(exc))

    async def apply_batch(self, items: Sequence[Item]) -> BatchResult:
        """See IndexStore.apply_batch. Raises what the child's apply_batch raised, or
        WriterStopped (retriable) when the child is not running."""
        if not items:
            return BatchResult(0, 0, 0, 0)
        staged, self._staged = self._staged, None
        batch_id = staged[0] if staged is not None and staged[1] is items else 0
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._sender, self._send_apply, batch_id, items)
        reply = await loop.run_in_executor(self._receiver, self._receive)
        return reply_result(reply)

    async def close(self) -> None:
        """End the child after the batch it runs, and wait for it. Once is enough."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._sender, self._forget)
        self._sender.shutdown(wait=False)
        self._receiver.shutdown(wait=False)

    # --- in the sending thread -------------------------------------------------------------

    def _send_staged(self, batch_id: int, items: Sequence[Item]) -> None:
        with contextlib.suppress(errors.ConsumerError):  # shown at its apply_batch
            self._send(_STAGE, batch_id, items)
            self._staged_with = (batch_id, self._generation)

    def _send_apply(self, batch_id: int, items: Sequence[Item]) -> None:
        """APPLY the staged batch if this very child has it, else send it whole (it was
        not staged, or went to a child that has gone since)."""
        staged_with, self._staged_with = self._staged_with, None
        if batch_id and staged_with == (batch_id, self._generation) and self._running():
            self._send(_APPLY, batch_id, ())
        else:
            self._send(_BATCH, 0, items)

    def _start_if_needed(self) -> Connection:
        pipe = self._pipe if self._running() else None
        return self._start() if pipe is None else pipe

    def _send(self, tag: bytes, batch_id: int, items: Sequence[Item]) -> None:
        """One frame: ``tag``, the id (STAGE, APPLY), the items encoded (STAGE, BATCH)."""
        pipe = self._start_if_needed()
        frame = tag
        if tag != _BATCH:
            frame += batch_id.to_bytes(_ID_BYTES, "big")
        if tag != _APPLY:
            frame += encode_items(items)
        try:
            pipe.send_bytes(frame)
        except OSError as exc:
            self._forget()
            raise WriterStopped(f"index writer process ended: {exc}") from exc

    def _running(self) -> bool:
        if self._broken or self._pipe is None or self._process is None:
            return False
        return self._process.poll() is None

    def _start(self) -> Connection:
        self._forget()
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise WriterStopped(f"index writer process not started: {exc}") from exc
        finally:
            theirs.close()
        pipe = Connection(ours.detach())
        self._process, self._pipe = process, pipe
        self._generation += 1
        self._broken = False
        try:
            # What it needs to open the index goes down the pipe: argv and the environment
            # are visible to other users (ps, /proc), and the URL may hold a password.
            pipe.send_bytes(encode_start(self._url, self._command_timeout_s, configured_setup()))
            ready = pipe.poll(START_TIMEOUT_S)
        except OSError as exc:
            self._forget()
            raise WriterStopped(f"index writer process ended at its start: {exc}") from exc
        if not ready:
            self._forget()
            raise WriterStopped(f"index writer process not ready in {START_TIMEOUT_S:g} s")
        try:
            reply_result(pipe.recv_bytes())  # raises what opening the index raised
        except (EOFError, OSError) as exc:
            self._forget()
            raise WriterStopped(f"index writer process ended at its start: {exc}") from exc
        except errors.ConsumerError:
            self._forget()
            raise
        log.debug("index writer process started", pid=process.pid)
        return pipe

    def _forget(self) -> None:
        """Drop the child: its pipe closed, so it ends after the batch it writes (killed
        if that takes over CLOSE_GRACE_S), and reaped."""
        if self._pipe is not None:
            self._pipe.close()
        if self._process is not None:
            try:
                self._process.wait(timeout=CLOSE_GRACE_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process, self._pipe = None, None

    # --- in the receiving thread -----------------------------------------------------------

    def _receive(self) -> bytes:
        pipe = self._pipe
        if pipe is None:
            raise WriterStopped("index writer process not running")
        try:
            return pipe.recv_bytes()
        except (EOFError, OSError) as exc:
            self._broken = True  # the sending thread starts another child
            raise WriterStopped(f"index writer process ended during a batch: {exc}") from exc


def main(argv: Sequence[str]) -> None:
    """``python -m consumer.index.writer_process FD``: serve the parent on the connected
    socket FD, whose first frame says which index to open and how to log."""
    pipe = Connection(int(argv[1]))
    try:
        url, command_timeout_s, logging_setup = decode_start(pipe.recv_bytes())
    except (EOFError, OSError):
        return  # the parent went before saying what to open
    serve(url, command_timeout_s, pipe, logging_setup)


if __name__ == "__main__":
    main(sys.argv)
