"""The one batch loop of every role that consumes Kafka (the indexer, the processor).

    getmany → handler.handle(batch) → dead letters → commit offsets → lag

A handler that can ``prepare`` a batch (the indexer: decoding) gets the stages overlapped:
batch n+1 is fetched and prepared while batch n is written and dead-lettered, and batch
n's offsets are committed while batch n+1 is written, so the CPU work of decoding runs
while the index works and no write waits for a commit's round trip. A batch's offsets
still go out only after its work ended, and in batch order (each commit is chained after
the previous one), so never past a gap; a revoke waits for the chained commits as for the
batch in flight; a prepared batch fetched before a rebalance is dropped unhandled
(aiokafka re-reads every partition of the new assignment from its committed offset, so
it comes again).

The loop owns the Kafka side: the clients, the subscription and its rebalance listener,
pausing fetches while work waits (still polling, so the group keeps the member), the
commit policy, the dead-letter writes, burst mode and the lag gauge. A handler only does
the work of one batch and returns the messages to dead-letter.

Offsets are committed after the batch's work ended, and only for partitions still
assigned, so a crash or a rebalance means redelivery, never loss. Rebalances are routine:

* a handler with short batches (``finish_before_revoke``: the indexer's index writes) is
  waited for on revoke, so a revoked partition is never left with work done and not
  committed; its batch is also shielded from cancellation (the grace period);
* a handler with long batches (the processor's jobs) is not waited for: its jobs hold
  leases in the index, the partition's new owner waits for those leases instead of
  running the jobs again, and the old owner's commit of a revoked partition is dropped.

A commit the broker refuses because the group moved on is not an error (the new owner
re-reads from the last commit, and every handler is idempotent); a broker that cannot
take a commit is retried, paused, until it can or the loop stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from consumer.errors import ConsumerError, KafkaUnavailable, StopRequested
from consumer.kafka.clients import (
    close_client,
    new_consumer,
    new_producer,
    start_client,
    start_when_reachable,
)
from consumer.kafka.dead_letters import DeadLetter, send_dead_letters
from consumer.retry import retry
from consumer.settings import Settings
from consumer.telemetry import batch_span, instruments

log = structlog.get_logger(__name__)
T = TypeVar("T")

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]

# While work runs with fetching paused, Kafka is polled this often: well inside
# max.poll.interval.ms, and a rebalance's new partitions are paused within a second.
PAUSED_POLL_INTERVAL_S = 1.0


# --------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------


def offsets_to_commit(batch: Batch) -> dict[TopicPartition, int]:
    """The next offset to read per partition: one past the last record of the batch."""
    return {tp: records[-1].offset + 1 for tp, records in batch.items() if records}


def batch_size(batch: Batch) -> int:
    return sum(len(records) for records in batch.values())


@dataclass
class LoopStats:
    """What the loop counts; each role's stats extend it (read by tests and /status)."""

    batches: int = 0
    messages: int = 0
    dead_lettered: int = 0
    fetch_pauses: int = 0  # times fetching was paused to wait (for the index, jobs, the DLQ)
    rebalances: int = 0
    commits_refused: int = 0  # commits the group refused after a rebalance (redelivered)
    # Why the latest retried call failed (the index full, the broker silent), until one
    # succeeds again: /status says what the role waits for while it waits.
    last_failure: str | None = None

    def note_failure(self, reason: str | None) -> None:
        self.last_failure = None if reason is None else reason[:300]


class BatchHandler(Protocol):
    """The work of one role on one batch.

    A handler may also define ``async def prepare(self, batch) -> object`` (see
    ``PreparingHandler``): then the loop prepares each batch while the previous one is
    handled, and hands the result to ``handle`` as ``work.prepared``.
    """

    # True: a batch is short and must end with its commit — a revoke waits for it and a
    # cancellation cannot cut it. False: batches may run long (jobs under leases).
    @property
    def finish_before_revoke(self) -> bool: ...

    async def handle(self, batch: Batch, work: BatchWork) -> Sequence[DeadLetter]:
        """Do the batch's work; the messages to dead-letter before it is committed.
        Raises StopRequested when stopped before the work ended (nothing committed)."""


@runtime_checkable
class PreparingHandler(Protocol):
    """The optional stage of a handler that the loop overlaps with the previous batch."""

    async def prepare(self, batch: Batch) -> object:
        """CPU work on the fetched batch that touches nothing outside it (decoding); it
        should yield to the event loop now and then, so the batch being written goes on."""


# --------------------------------------------------------------------------------------
# Pausing
# --------------------------------------------------------------------------------------


class FetchPause:
    """Fetching paused while work waits, the consumer still polled (so it keeps its place
    in the group). Nested holds share one pause; the last release resumes.

    A partition assigned by a rebalance while paused is paused at the next ``poll()``;
    records it returned before that are rewound, so they are read again, never skipped.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._paused: set[TopicPartition] = set()
        self._holds = 0

    @property
    def held(self) -> bool:
        return self._holds > 0

    def hold(self) -> None:
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        if self._holds == 0 and self._paused:
            assignment = self._consumer.assignment()
            self._consumer.resume(*(tp for tp in self._paused if tp in assignment))
            self._paused = set()

    async def poll(self) -> bool:
        """Pause what is assigned and poll once; True when it paused anything new."""
        assignment = self._consumer.assignment()
        newly_paused = bool(assignment - self._paused)
        if newly_paused:
            self._consumer.pause(*assignment)
            self._paused = set(assignment)
        stray = await self._consumer.getmany(timeout_ms=0)
        for tp, records in stray.items():
            self._consumer.seek(tp, records[0].offset)
        return newly_paused


class BatchWork:
    """What a handler may ask of the loop while its batch runs."""

    def __init__(self, loop: BatchLoop, prepared: object = None) -> None:
        self._loop = loop
        # What the handler's ``prepare`` made of this batch (None: it has no prepare).
        self.prepared = prepared

    @property
    def stop_event(self) -> asyncio.Event:
        return self._loop.stop_event

    async def retry(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``operation`` (an index or broker call), retrying while it is unavailable
        until the loop stops (StopRequested); fetching is paused while it waits."""
        return await self._loop.retry_paused(operation, what)

    @contextlib.asynccontextmanager
    async def paused(self, reason: str) -> AsyncIterator[None]:
        """Fetching paused and Kafka polled in the background while the block runs."""
        async with self._loop.paused(reason):
            yield

    async def wait(self, seconds: float) -> None:
        """Sleep, or raise StopRequested as soon as the loop is asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop.stop_event.wait(), seconds)
        if self._loop.stop_event.is_set():
            raise StopRequested("stopped while waiting")


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


class LoopRole:
    """A role that runs on a ``BatchLoop`` (the indexer, the processor): stopping it is
    stopping its loop."""

    _loop: BatchLoop

    def stop(self) -> None:
        """Ask the loop to finish (or give up) its batch, commit what ended and return."""
        self._loop.stop()

    @property
    def stopping(self) -> bool:
        return self._loop.stopping


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: BatchLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop.on_assigned(assigned)


class BatchLoop:
    """Consumes ``topic`` as ``group_id`` and hands each batch to ``handler``.
    ``run()`` until ``stop()`` (or, in burst mode, until drained or ``stop_at``)."""

    def __init__(
        self,
        settings: Settings,
        handler: BatchHandler,
        stats: LoopStats,
        *,
        topic: str,
        group_id: str,
        max_records: int,
        stop_at: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self.stats = stats
        self.topic = topic
        self.group_id = group_id
        self._max_records = max_records
        # Burst mode ends at these offsets instead of the moving end of the topic (replay).
        self._stop_at = dict(stop_at) if stop_at is not None else None
        self.stop_event = asyncio.Event()
        self._in_flight = asyncio.Lock()
        # The overlapped loop's latest offset commit, chained after the earlier ones.
        self._committing: asyncio.Future[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pause: FetchPause | None = None
        # Bumped at every revoke and assignment: a batch fetched under an older
        # generation may hold records of partitions this member no longer reads from there.
        self._generation = 0

    def stop(self) -> None:
        """Ask the loop to finish (or give up) its batch, commit what ended and return."""
        self.stop_event.set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    async def run(self, *, burst: bool = False) -> None:
        try:
            consumer, producer = await start_when_reachable(
                lambda: _started_clients(self._settings, self.group_id),
                self._settings,
                self.stop_event,
            )
        except StopRequested:
            log.info("stopped before Kafka was reachable")  # nothing read, nothing to commit
            return
        self._consumer, self._producer = consumer, producer
        self._pause = FetchPause(consumer)
        try:
            self._consumer.subscribe([self.topic], listener=_Rebalance(self))
            await self._consume(burst)
        finally:
            await stop_clients(self._consumer, self._producer)
            instruments.forget_lag(self.group_id)

    async def _consume(self, burst: bool) -> None:
        if isinstance(self._handler, PreparingHandler):
            await self._consume_overlapped(self._handler, burst)
            return
        consumer = self._require_consumer()
        while not self.stop_event.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
            if batch:
                try:
                    await self._run_batch(batch)
                except StopRequested:
                    # Stopped before the batch's work ended: nothing of it was committed, so
                    # it is delivered again on the next start (to whoever owns it then).
                    log.info("stopped before the batch ended", messages=batch_size(batch))
                    return
                if burst and self._stop_at is not None and await self._burst_done():
                    return
            elif burst and await self._burst_done():
                return

    async def _consume_overlapped(self, handler: PreparingHandler, burst: bool) -> None:
        """As ``_consume``, with batch n+1 fetched and prepared while batch n is handled,
        and batch n's offsets committed while batch n+1 is handled."""
        try:
            await self._overlapped(handler, burst)
        finally:
            await self._commits_done()

    async def _overlapped(self, handler: PreparingHandler, burst: bool) -> None:
        ahead = await self._fetch_prepared(handler)
        while not self.stop_event.is_set():
            batch, prepared, generation = ahead
            if generation != self._generation:
                # Fetched before a rebalance: every partition it came from was reassigned
                # (to another member, or to this one from its committed offset), so its
                # records are read again by whoever owns them now.
                log.info("dropped a batch fetched before a rebalance", messages=len(batch))
                ahead = await self._fetch_prepared(handler)
                continue
            if not batch:
                if burst and await self._burst_done():
                    return
                ahead = await self._fetch_prepared(handler)
                continue
            # Burst mode with an end (replay): decided on batch n alone, before fetching
            # ahead moves the positions on.
            last = burst and self._stop_at is not None and await self._burst_done()
            # Shielded, as in _run_batch: a cancellation cannot cut into its work, and its
            # commit is a task of its own, which the end of the loop waits for.
            handling = asyncio.ensure_future(self._work_then_commit_later(batch, prepared))
            try:
                # Batch n's work first, up to its first wait (its write sent on): fetching
                # ahead does not wait for the network when records are buffered, and would
                # otherwise unpack and decode its first slice before the write even began.
                await asyncio.sleep(0)
                if not last:
                    ahead = await self._fetch_prepared(handler)
                await asyncio.shield(handling)
                self._raise_failed_commit()
            except StopRequested:
                log.info("stopped before the batch ended", messages=batch_size(batch))
                return
            except asyncio.CancelledError:
                # The grace period ran out: batch n still ends with its commit (as in
                # _run_batch); what was fetched ahead is dropped, uncommitted.
                self.stop_event.set()
                with contextlib.suppress(StopRequested):
                    await handling
                raise
            except BaseException:
                # The batch's work failed, or the fetch ahead did: batch n ends (or gives
                # up) before the error goes on.
                self.stop_event.set()
                with contextlib.suppress(StopRequested):
                    await handling
                raise
            if last:
                return

    async def _fetch_prepared(self, handler: PreparingHandler) -> tuple[Batch, object, int]:
        """The next batch (maybe empty), prepared, with the generation it was read in."""
        consumer = self._require_consumer()
        batch = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
        # Read right after getmany returned, with no await in between: the records and
        # the generation belong to the same assignment.
        generation = self._generation
        prepared = await handler.prepare(batch) if batch else None
        return batch, prepared, generation

    async def _burst_done(self) -> bool:
        consumer = self._require_consumer()
        if self._stop_at is not None:
            return await reached(consumer, self._stop_at)
        return await drained(consumer)

    async def _run_batch(self, batch: Batch) -> None:
        if not self._handler.finish_before_revoke:
            await self._batch(batch)
            return
        # Shielded: a cancellation (the grace period ran out) cannot cut between the work
        # and its commit; the batch ends first, bounded because stop makes every retry
        # give up within one backoff step.
        task = asyncio.ensure_future(self._batch(batch))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self.stop_event.set()
            with contextlib.suppress(StopRequested):
                await task
            raise

    async def _batch(self, batch: Batch) -> None:
        async with self._in_flight:
            with batch_span(self.topic, self.group_id, batch_size(batch)):
                await self._work(batch)
                await self._commit_batch(batch)

    async def _work_then_commit_later(self, batch: Batch, prepared: object) -> None:
        """The batch's work; its commit is chained after the previous batch's and runs
        while the next batch is worked on."""
        async with self._in_flight:
            with batch_span(self.topic, self.group_id, batch_size(batch)):
                await self._work(batch, prepared)
            # Set inside the lock: a revoke that waited for this batch's work sees it.
            self._committing = asyncio.ensure_future(self._commit_after(self._committing, batch))

    async def _work(self, batch: Batch, prepared: object = None) -> None:
        """The handler's work on ``batch``, then its dead letters: all before its commit."""
        self.stats.messages += batch_size(batch)
        letters = await self._handler.handle(batch, BatchWork(self, prepared))
        if letters:
            await self.retry_paused(lambda: self._send_dead_letters(letters), "dead-letter write")
            self.stats.dead_lettered += len(letters)

    async def _commit_after(self, previous: asyncio.Future[None] | None, batch: Batch) -> None:
        # In batch order: a batch's offsets never go out before an earlier batch's (a
        # failed earlier commit fails this one too).
        if previous is not None:
            await previous
        await self._commit_batch(batch)

    async def _commit_batch(self, batch: Batch) -> None:
        await self.retry_paused(lambda: self._commit(offsets_to_commit(batch)), "offset commit")
        self.stats.batches += 1
        self._record_lag(batch)

    def _raise_failed_commit(self) -> None:
        task = self._committing
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error

    async def _commits_done(self) -> None:
        """Wait for the last chained commit (at the end of the overlapped loop)."""
        task, self._committing = self._committing, None
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except StopRequested:
            # Stopped while the broker could not take it: those batches come again.
            log.info("stopped before a batch's offsets were committed")

    # --- rebalances ----------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        if self._handler.finish_before_revoke:
            async with self._in_flight:  # the batch in flight ends and commits first
                committing = self._committing
            if committing is not None:
                with contextlib.suppress(StopRequested):
                    await asyncio.shield(committing)
        instruments.forget_lag(self.group_id, revoked)
        log.info("partitions revoked", partitions=_names(revoked))

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        self.stats.rebalances += 1
        log.info("partitions assigned", partitions=_names(assigned))

    # --- waiting with fetching paused ----------------------------------------------------

    async def retry_paused(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        operation = self._noting_failures(operation, what)
        pause = self._require_pause()
        if pause.held:
            # Already paused, with a poller at work: just wait.
            return await retry(
                operation,
                what=what,
                base_s=self._settings.index_retry_backoff_s,
                cap_s=30.0,
                stop=self.stop_event,
            )

        announced = False

        async def keep_membership() -> None:
            nonlocal announced
            if not announced:
                announced = True
                pause.hold()
                self.stats.fetch_pauses += 1
                log.warning("fetching paused", reason=what)
            await pause.poll()

        try:
            return await retry(
                operation,
                what=what,
                base_s=self._settings.index_retry_backoff_s,
                cap_s=30.0,
                on_wait=keep_membership,
                stop=self.stop_event,
            )
        finally:
            if announced:
                pause.release()
                log.info("fetching resumed", after=what)

    def _noting_failures(
        self, operation: Callable[[], Awaitable[T]], what: str
    ) -> Callable[[], Awaitable[T]]:
        """``operation`` that notes in the stats why it failed, or that it succeeded."""

        async def noted() -> T:
            try:
                result = await operation()
            except ConsumerError as exc:
                if exc.retriable:
                    self.stats.note_failure(f"{what}: {exc}")
                raise
            self.stats.note_failure(None)
            return result

        return noted

    @contextlib.asynccontextmanager
    async def paused(self, reason: str) -> AsyncIterator[None]:
        pause = self._require_pause()
        pause.hold()
        self.stats.fetch_pauses += 1
        log.debug("fetching paused", reason=reason)

        async def keep_polling() -> None:
            while True:
                await pause.poll()
                await asyncio.sleep(PAUSED_POLL_INTERVAL_S)

        poller = asyncio.create_task(keep_polling())
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await poller
            pause.release()

    # --- Kafka writes --------------------------------------------------------------------

    async def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        assert self._producer is not None
        await send_dead_letters(
            self._producer, self._settings.kafka_dlq_topic, letters, group_id=self.group_id
        )

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        consumer = self._require_consumer()
        mine = {tp: offset for tp, offset in offsets.items() if tp in consumer.assignment()}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except (CommitFailedError, IllegalStateError):
            # The group rebalanced meanwhile: the partitions' new owners re-read from the
            # last commit, and every handler makes that redelivery harmless.
            self.stats.commits_refused += 1
            log.warning("commit refused after a rebalance", partitions=len(mine))
        except KafkaError as exc:
            raise KafkaUnavailable(f"offset commit failed: {exc}") from exc

    def _record_lag(self, batch: Batch) -> None:
        """Each assigned partition's lag once the batch ended: the high watermark (as of
        the fetch) minus the next offset to read. Free: no request."""
        consumer = self._require_consumer()
        assignment = consumer.assignment()
        for tp, records in batch.items():
            if not records or tp not in assignment:
                continue  # revoked meanwhile: its new owner reports it
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - (records[-1].offset + 1))
                instruments.set_lag(self.group_id, tp.topic, tp.partition, lag)

    def _require_consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "run() starts the consumer"
        return self._consumer

    def _require_pause(self) -> FetchPause:
        assert self._pause is not None, "run() creates the pause"
        return self._pause


# --------------------------------------------------------------------------------------
# Clients and burst checks
# --------------------------------------------------------------------------------------


def _new_clients(settings: Settings, group_id: str) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """An (unstarted) consumer of ``group_id`` that commits by hand, from the earliest
    offset on first start, and the idempotent producer its dead letters go through.
    Raises ConfigError (bad Kafka security settings)."""
    consumer = new_consumer(
        settings,
        client_id=f"voxpersona-{group_id}",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # 4 MiB a partition (aiokafka's default: 1 MiB): a fetch then holds a whole batch
        # of MinIO's ~1.3 KB events even from one partition. At 1 MiB a 4-partition fetch
        # held ~3,000, so batches alternated 2,000 and ~1,000 and the small ones paid a
        # commit each for half the events (115 batches for 200,000 events instead of 100).
        max_partition_fetch_bytes=max(4 * 1_048_576, settings.indexer_max_message_bytes + 1024),
    )
    producer = new_producer(
        settings, client_id=f"voxpersona-{group_id}-dlq", acks="all", enable_idempotence=True
    )
    return consumer, producer


async def _started_clients(
    settings: Settings, group_id: str
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """New clients, started (fresh ones each try: a stopped aiokafka client stays closed)."""
    consumer, producer = _new_clients(settings, group_id)
    await _start_clients(consumer, producer, settings)
    return consumer, producer


async def _start_clients(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, settings: Settings
) -> None:
    """Start both; on failure stop both and raise KafkaUnavailable: retriable when Kafka
    is unreachable, not when the credentials or the broker's certificate were refused
    (the reason then says so)."""
    await start_client(consumer, settings)
    try:
        await start_client(producer, settings)
    except KafkaUnavailable:
        await close_client(consumer)
        raise


async def stop_clients(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    for client in clients:
        if client is not None:
            await close_client(client)


async def drained(consumer: AIOKafkaConsumer) -> bool:
    """True when every assigned partition's position has reached its end offset."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    try:
        ends = await consumer.end_offsets(list(assignment))
        for tp in assignment:
            if await consumer.position(tp) < ends[tp]:
                return False
    except IllegalStateError:  # revoked meanwhile: not drained yet, ask again
        return False
    return True


async def reached(consumer: AIOKafkaConsumer, stop_at: Mapping[TopicPartition, int]) -> bool:
    """True when every partition of ``stop_at`` is assigned and read up to its offset."""
    assignment = consumer.assignment()
    try:
        for tp, offset in stop_at.items():
            if tp not in assignment or await consumer.position(tp) < offset:
                return False
    except IllegalStateError:  # revoked meanwhile
        return False
    return True


def _names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)
