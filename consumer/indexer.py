"""The indexer: MinIO events from Kafka into the metadata index, at least once, idempotently.

One loop, one batch at a time:

    getmany → decode (poison → DLQ) → one index transaction → commit offsets

Offsets are committed only after the batch's index transaction committed, so a crash
anywhere means redelivery, never loss; the index makes redelivery harmless (journal dedupe,
sequencer comparison, tombstones). Events of one object share a Kafka partition (MinIO keys
messages by "<bucket>/<key>"), and a partition's batches are applied in offset order, so
per-object order is kept.

When the index is unavailable the loop pauses fetching and retries with backoff and jitter
while still polling Kafka (so the group keeps it), then resumes: nothing is committed, and
nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import Link, Span, SpanKind

from consumer.events import MalformedEvent, ObjectEvent, parse_message
from consumer.fetching import (
    DeadLetter,
    FetchPause,
    KafkaUnavailable,
    drained,
    new_clients,
    reached,
    record_lag,
    send_dead_letters,
    start_clients,
    stop_clients,
)
from consumer.index import IndexStore
from consumer.index.base import BatchResult, KafkaPosition
from consumer.retry import StopRequested, retry
from consumer.settings import Settings
from consumer.telemetry import (
    batch_span,
    instruments,
    kafka_attributes,
    object_attributes,
    tracer,
    upload_context,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]


# --------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedBatch:
    events: list[tuple[ObjectEvent, KafkaPosition]]
    dead_letters: list[DeadLetter]


def decode_batch(batch: Batch, *, max_message_bytes: int) -> DecodedBatch:
    """Split a fetched batch into events (with their Kafka position) and poison messages."""
    events: list[tuple[ObjectEvent, KafkaPosition]] = []
    dead: list[DeadLetter] = []
    for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
        for record in batch[tp]:
            position = KafkaPosition(record.topic, record.partition, record.offset)
            try:
                parsed = parse_message(record.value, max_bytes=max_message_bytes)
            except MalformedEvent as exc:
                dead.append(DeadLetter(record, exc.error_class, exc.reason))
                continue
            events.extend((event, position) for event in parsed)
    return DecodedBatch(events, dead)


def _event_spans(
    events: Sequence[tuple[ObjectEvent, KafkaPosition]], batch_span: Span, topic: str, group: str
) -> list[Span]:
    """One span per event, ended once the batch is written and committed. An event whose
    object carries the uploader's ``traceparent`` joins that trace (linked to the batch);
    the others are children of the batch. None at all when tracing is off."""
    if not batch_span.is_recording():
        return []
    batch_link = [Link(batch_span.get_span_context())]
    spans: list[Span] = []
    for event, position in events:
        parent = upload_context(event.user_metadata)
        attributes = {
            **kafka_attributes(topic, group, position.partition, position.offset),
            **object_attributes(event.bucket, event.key, event.size, event.version_id),
            "voxpersona.event.name": event.event_name,
            "voxpersona.event.kind": event.kind.value,
        }
        spans.append(
            tracer.start_span(
                "index event",
                context=parent,
                kind=SpanKind.CONSUMER,
                links=batch_link if parent is not None else None,
                attributes=attributes,
            )
        )
    return spans


def offsets_to_commit(batch: Batch) -> dict[TopicPartition, int]:
    """The next offset to read per partition: one past the last record of the batch."""
    return {tp: records[-1].offset + 1 for tp, records in batch.items() if records}


# --------------------------------------------------------------------------------------
# Statistics (read by tests, /status and metrics)
# --------------------------------------------------------------------------------------


@dataclass
class IndexerStats:
    batches: int = 0
    messages: int = 0
    events: int = 0
    journaled: int = 0
    duplicates: int = 0
    objects_changed: int = 0
    stale_ignored: int = 0
    dead_lettered: int = 0
    fetch_pauses: int = 0  # times fetching was paused to wait for the index (or the DLQ)
    last_batch_s: float = 0.0
    events_by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, decoded: DecodedBatch, result: BatchResult, elapsed_s: float) -> Counter[str]:
        """Count the batch in; its events per kind (for the metrics)."""
        self.batches += 1
        self.events += len(decoded.events)
        self.journaled += result.journaled
        self.duplicates += result.duplicates
        self.objects_changed += result.objects_changed
        self.stale_ignored += result.stale_ignored
        self.dead_lettered += len(decoded.dead_letters)
        self.last_batch_s = elapsed_s
        kinds = Counter(event.kind.value for event, _ in decoded.events)
        for kind, count in kinds.items():
            self.events_by_kind[kind] = self.events_by_kind.get(kind, 0) + count
        return kinds


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


class _FinishBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Let the in-flight batch finish (it commits its own offsets) before partitions move
    elsewhere, so a revoked partition is never left with a written, uncommitted batch."""

    def __init__(self, batch_lock: asyncio.Lock) -> None:
        self._batch_lock = batch_lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._batch_lock:
            log.info("partitions revoked", partitions=sorted(str(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=sorted(str(tp) for tp in assigned))


class Indexer:
    """Consumes the events topic into ``store``. ``run()`` until ``stop()`` (or drained)."""

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        stop_at: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        # Burst mode ends at these offsets instead of the moving end of the topic (replay).
        self._stop_at = dict(stop_at) if stop_at is not None else None
        self.topic = topic or settings.kafka_events_topic
        self.group_id = group_id or settings.kafka_group_id
        self.stats = IndexerStats()
        self._stop = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, *, burst: bool = False) -> IndexerStats:
        """Consume until ``stop()``; with ``burst``, return once every partition is drained."""
        self._consumer, self._producer = new_clients(self._settings, self.group_id)
        await start_clients(self._consumer, self._producer, self._settings)
        try:
            self._consumer.subscribe([self.topic], listener=_FinishBatchOnRevoke(self._batch_lock))
            await self._loop(burst)
        finally:
            await stop_clients(self._consumer, self._producer)
        return self.stats

    async def _loop(self, burst: bool) -> None:
        assert self._consumer is not None
        max_records = self._settings.indexer_batch_max_records
        while not self._stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=500, max_records=max_records)
            if batch:
                try:
                    await self._process_shielded(batch)
                except StopRequested:
                    # Stopped while the index was down: this batch was not written and not
                    # committed, so it is delivered again on the next start.
                    log.info(
                        "stopped before the batch could be indexed",
                        messages=sum(len(records) for records in batch.values()),
                    )
                    return
                if burst and self._stop_at is not None and await self._burst_done():
                    return
            elif burst and await self._burst_done():
                return

    async def _burst_done(self) -> bool:
        assert self._consumer is not None
        if self._stop_at is not None:
            return await reached(self._consumer, self._stop_at)
        return await drained(self._consumer)

    async def _process_shielded(self, batch: Batch) -> None:
        """Process a batch so that a cancellation (grace period over) cannot cut between
        the index transaction and its offset commit: the batch finishes first, then the
        cancellation goes on. The wait is bounded: with stop set, a batch stuck retrying
        gives up (StopRequested) within one backoff step."""
        task = asyncio.ensure_future(self._process(batch))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self._stop.set()
            with contextlib.suppress(StopRequested):
                await task
            raise

    async def _process(self, batch: Batch) -> None:
        async with self._batch_lock:
            started = time.perf_counter()
            messages = sum(len(records) for records in batch.values())
            with batch_span(self.topic, self.group_id, messages) as span:
                decoded = decode_batch(
                    batch, max_message_bytes=self._settings.indexer_max_message_bytes
                )
                self.stats.messages += messages
                event_spans = _event_spans(decoded.events, span, self.topic, self.group_id)
                try:
                    result = await self._write(decoded)
                    await self._commit(offsets_to_commit(batch))
                finally:
                    for span in event_spans:
                        span.end()
                elapsed = time.perf_counter() - started
                kinds = self.stats.add(decoded, result, elapsed)
                self._record_metrics(batch, decoded, elapsed, kinds)
                log.debug(
                    "batch indexed",
                    events=len(decoded.events),
                    journaled=result.journaled,
                    duplicates=result.duplicates,
                    dead=len(decoded.dead_letters),
                    elapsed_ms=round(elapsed * 1000, 1),
                )

    async def _write(self, decoded: DecodedBatch) -> BatchResult:
        """Dead letters first, then the index transaction, each retried while paused."""
        if decoded.dead_letters:
            await self._retry_paused(
                lambda: self._send_dead_letters(decoded.dead_letters), "dead-letter write"
            )
        attributes: dict[str, str | int] = {
            "db.system.name": self._store.db_system,
            "db.operation.name": "apply_batch",
            "voxpersona.batch.events": len(decoded.events),
        }
        with tracer.start_as_current_span(
            "index write", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            result = await self._retry_paused(
                lambda: self._store.apply_batch(decoded.events), "index write"
            )
            span.set_attributes(
                {
                    "voxpersona.batch.journaled": result.journaled,
                    "voxpersona.batch.duplicates": result.duplicates,
                    "voxpersona.batch.objects_changed": result.objects_changed,
                }
            )
        return result

    def _record_metrics(
        self, batch: Batch, decoded: DecodedBatch, elapsed_s: float, kinds: Mapping[str, int]
    ) -> None:
        for kind, count in kinds.items():
            instruments.events.add(count, {"group": self.group_id, "kind": kind})
        backend = {"backend": self._store.db_system}
        instruments.batch_duration.record(elapsed_s, backend)
        now = datetime.now(UTC)
        for event, _ in decoded.events:
            instruments.delay.record(max(0.0, (now - event.event_time).total_seconds()))
        assert self._consumer is not None
        record_lag(self._consumer, batch, self.group_id)

    async def _retry_paused(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Retry a write; while waiting, fetching is paused but Kafka is still polled."""
        assert self._consumer is not None
        pause = FetchPause(self._consumer)

        async def keep_membership() -> None:
            if await pause.poll():
                self.stats.fetch_pauses += 1
                log.warning("fetching paused", reason=what)

        try:
            return await retry(
                operation,
                what=what,
                base_s=self._settings.minio_retry_backoff / 4,
                cap_s=30.0,
                on_wait=keep_membership,
                stop=self._stop,
            )
        finally:
            if pause.paused:
                pause.resume()
                log.info("fetching resumed", after=what)

    async def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        assert self._producer is not None
        await send_dead_letters(
            self._producer, self._settings.kafka_dlq_topic, letters, group_id=self.group_id
        )

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        mine = {tp: offset for tp, offset in offsets.items() if tp in consumer.assignment()}
        if not mine:
            return

        async def commit() -> None:
            try:
                await consumer.commit(mine)
            except CommitFailedError:
                # The group rebalanced: the new owner re-reads from the last commit, and the
                # index makes the redelivery harmless.
                log.warning("commit refused after rebalance", partitions=len(mine))
            except KafkaError as exc:
                raise KafkaUnavailable(f"offset commit failed: {exc}") from exc

        await retry(commit, what="offset commit", base_s=0.2, cap_s=5.0, max_attempts=20)
