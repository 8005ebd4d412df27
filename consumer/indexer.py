"""The indexer: MinIO events from Kafka into the metadata index, at least once, idempotently.

A handler of the batch loop (consumer/kafka/batches.py):

    decode (poison → DLQ) → one index transaction → (the loop) commit offsets

Decoding is the handler's ``prepare`` stage, so the loop decodes batch n+1 while batch
n's transaction runs (in the index's own thread, and in the PostgreSQL server).

Offsets are committed only after the batch's index transaction committed, so a crash
anywhere means redelivery, never loss; the index makes redelivery harmless (journal dedupe,
sequencer comparison, tombstones). Events of one object share a Kafka partition (MinIO keys
messages by "<bucket>/<key>"), and a partition's batches are applied in offset order, so
per-object order is kept. Its batches are short, so a rebalance waits for the one in flight.

When the index is unavailable the write is retried with backoff and jitter while fetching
is paused and Kafka still polled (so the group keeps the member): nothing is committed,
and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol, runtime_checkable

import structlog
from aiokafka import TopicPartition
from opentelemetry.trace import Link, Span, SpanKind, get_current_span

from consumer.events import MalformedEvent, ObjectEvent, parse_message
from consumer.index import IndexStore
from consumer.index.records import BatchResult, Item, KafkaPosition
from consumer.index.writer_process import WriterProcess
from consumer.kafka.batches import Batch, BatchLoop, BatchWork, LoopRole, LoopStats, batch_size
from consumer.kafka.dead_letters import DeadLetter
from consumer.settings import Settings
from consumer.telemetry import (
    instruments,
    kafka_attributes,
    object_attributes,
    tracer,
    upload_context,
)

log = structlog.get_logger(__name__)


class BatchApplier(Protocol):
    """What writes a batch: the index store, or its writer process."""

    async def apply_batch(self, items: Sequence[Item]) -> BatchResult: ...


@runtime_checkable
class Staging(Protocol):
    """A writer that takes the next batch ahead, while it still writes the one before."""

    def stage(self, items: Sequence[Item]) -> None: ...


# --------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedBatch:
    events: list[tuple[ObjectEvent, KafkaPosition]]
    dead_letters: list[DeadLetter]
    # Time spent decoding (by Indexer.prepare, ahead of the write): still part of the
    # batch's duration in the metrics and stats.
    decode_s: float = 0.0
    # Each event's Kafka record timestamp (epoch seconds), in the order of ``events``:
    # where MinIO's delivery ends and the consumer's part begins.
    kafka_times_s: list[float] = field(default_factory=list)


def decode_batch(batch: Batch, *, max_message_bytes: int) -> DecodedBatch:
    """Split a fetched batch into events (with their Kafka position) and poison messages."""
    events: list[tuple[ObjectEvent, KafkaPosition]] = []
    dead: list[DeadLetter] = []
    times: list[float] = []
    for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
        for record in batch[tp]:
            position = KafkaPosition(record.topic, record.partition, record.offset)
            try:
                parsed = parse_message(record.value, max_bytes=max_message_bytes)
            except MalformedEvent as exc:
                dead.append(DeadLetter(record, exc.error_class, exc.reason))
                continue
            events.extend((event, position) for event in parsed)
            times.extend([record.timestamp / 1000.0] * len(parsed))
    return DecodedBatch(events, dead, kafka_times_s=times)


# Records decoded between two yields to the event loop in ``Indexer.prepare``: small
# enough that the batch being written is not held up for long between its statements.
_DECODE_SLICE = 100


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


# --------------------------------------------------------------------------------------
# Statistics (read by tests, /status and metrics)
# --------------------------------------------------------------------------------------


@dataclass
class IndexerStats(LoopStats):
    events: int = 0
    journaled: int = 0
    duplicates: int = 0
    objects_changed: int = 0
    stale_ignored: int = 0
    last_batch_s: float = 0.0
    events_by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, decoded: DecodedBatch, result: BatchResult, elapsed_s: float) -> Counter[str]:
        """Count the batch's events in (the loop counts batches, messages and dead
        letters); its events per kind (for the metrics)."""
        self.events += len(decoded.events)
        self.journaled += result.journaled
        self.duplicates += result.duplicates
        self.objects_changed += result.objects_changed
        self.stale_ignored += result.stale_ignored
        self.last_batch_s = elapsed_s
        kinds = Counter(
            {
                kind.value: count
                for kind, count in Counter(event.kind for event, _ in decoded.events).items()
            }
        )
        for kind_name, count in kinds.items():
            self.events_by_kind[kind_name] = self.events_by_kind.get(kind_name, 0) + count
        return kinds


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


class Indexer(LoopRole):
    """Consumes the events topic into ``store``. ``run()`` until ``stop()`` (or drained).

    ``store`` must be the index of ``settings.index_url``: with INDEX_WRITER_PROCESS the
    batches are written by a process that opens that URL itself (unless ``writes`` is
    given, which then writes every batch)."""

    finish_before_revoke = True

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        stop_at: Mapping[TopicPartition, int] | None = None,
        writes: BatchApplier | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        # Where batches are written: ``writes`` (the caller's), a process of the indexer's
        # own (INDEX_WRITER_PROCESS), or the store in its thread.
        self._writer_process = (
            WriterProcess(settings.index_url, command_timeout_s=settings.index_command_timeout_s)
            if writes is None and settings.index_writer_process
            else None
        )
        self._writes: BatchApplier = writes or self._writer_process or store
        self.topic = topic or settings.kafka_events_topic
        self.group_id = group_id or settings.kafka_group_id
        self.stats = IndexerStats()
        self._metrics = DeferredRecords()
        self._loop = BatchLoop(
            settings,
            self,
            self.stats,
            topic=self.topic,
            group_id=self.group_id,
            max_records=settings.indexer_batch_max_records,
            stop_at=stop_at,
        )

    async def run(self, *, burst: bool = False) -> IndexerStats:
        """Consume until ``stop()``; with ``burst``, return once every partition is drained."""
        try:
            if self._writer_process is not None:
                await self._writer_process.start()
            await self._loop.run(burst=burst)
        finally:
            await self._metrics.flush()
            if self._writer_process is not None:
                await self._writer_process.close()
        return self.stats

    def status(self) -> dict[str, object]:
        """The counters /status shows."""
        return dataclasses.asdict(self.stats)

    def summary(self) -> dict[str, int]:
        """The counters worth a line at shutdown."""
        stats = self.stats
        return {
            "batches": stats.batches,
            "events": stats.events,
            "journaled": stats.journaled,
            "duplicates": stats.duplicates,
            "dead_lettered": stats.dead_lettered,
        }

    async def prepare(self, batch: Batch) -> DecodedBatch:
        """``decode_batch``, in slices with the event loop let run in between (the loop
        calls this while the previous batch is written)."""
        limit = self._settings.indexer_max_message_bytes
        events: list[tuple[ObjectEvent, KafkaPosition]] = []
        dead: list[DeadLetter] = []
        times: list[float] = []
        busy = 0.0
        with self._metrics.held_off():  # the writer may be waiting for this batch
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                records = batch[tp]
                for start in range(0, len(records), _DECODE_SLICE):
                    started = time.perf_counter()
                    part = decode_batch(
                        {tp: records[start : start + _DECODE_SLICE]}, max_message_bytes=limit
                    )
                    events.extend(part.events)
                    dead.extend(part.dead_letters)
                    times.extend(part.kafka_times_s)
                    busy += time.perf_counter() - started
                    await asyncio.sleep(0)
            if isinstance(self._writes, Staging):
                self._writes.stage(events)
        return DecodedBatch(events, dead, decode_s=busy, kafka_times_s=times)

    async def handle(self, batch: Batch, work: BatchWork) -> Sequence[DeadLetter]:
        """Write the (decoded) batch in one index transaction; its poison messages."""
        decoded = work.prepared
        if not isinstance(decoded, DecodedBatch):
            decoded = await self.prepare(batch)
        started = time.perf_counter()
        event_spans = _event_spans(decoded.events, get_current_span(), self.topic, self.group_id)
        try:
            result = await self._write(decoded, work)
        finally:
            for span in event_spans:
                span.end()
        elapsed = time.perf_counter() - started + decoded.decode_s
        kinds = self.stats.add(decoded, result, elapsed)
        self._metrics.record(self._batch_metrics(decoded, elapsed, kinds))
        log.debug(
            "batch indexed",
            messages=batch_size(batch),
            events=len(decoded.events),
            journaled=result.journaled,
            duplicates=result.duplicates,
            dead=len(decoded.dead_letters),
            elapsed_ms=round(elapsed * 1000, 1),
        )
        return decoded.dead_letters

    async def _write(self, decoded: DecodedBatch, work: BatchWork) -> BatchResult:
        """The index transaction, retried (fetching paused) while the index is down."""
        attributes: dict[str, str | int] = {
            "db.system.name": self._store.db_system,
            "db.operation.name": "apply_batch",
            "voxpersona.batch.events": len(decoded.events),
        }
        with tracer.start_as_current_span(
            "index write", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            result = await work.retry(
                lambda: self._writes.apply_batch(decoded.events), "index write"
            )
            span.set_attributes(
                {
                    "voxpersona.batch.journaled": result.journaled,
                    "voxpersona.batch.duplicates": result.duplicates,
                    "voxpersona.batch.objects_changed": result.objects_changed,
                }
            )
        return result

    def _batch_metrics(
        self, decoded: DecodedBatch, elapsed_s: float, kinds: Mapping[str, int]
    ) -> Iterator[None]:
        """The batch's metric records, in slices (see DeferredRecords)."""
        now = datetime.now(UTC)
        delays = split_delays(decoded, now.timestamp())
        return _metric_records(
            delays, elapsed_s, kinds, group=self.group_id, backend=self._store.db_system
        )


# Delay records made between two yields to the event loop (a few microseconds each).
_RECORD_SLICE: Final = 250


@dataclass(frozen=True)
class Delays:
    """Per event, seconds: end to end (event time → indexed), and its two parts, MinIO's
    delivery (event time → Kafka record timestamp) and the consumer's (→ indexed)."""

    total: list[float]
    minio: list[float]
    consumer: list[float]


def split_delays(decoded: DecodedBatch, now_s: float) -> Delays:
    """The delays of ``decoded``'s events indexed at ``now_s`` (negative ones, from clocks
    a little apart, count as 0). Pure."""
    event_times = [event.event_time.timestamp() for event, _ in decoded.events]
    kafka_times = decoded.kafka_times_s
    return Delays(
        total=[max(0.0, now_s - t) for t in event_times],
        minio=[max(0.0, k - t) for t, k in zip(event_times, kafka_times, strict=True)],
        consumer=[max(0.0, now_s - k) for k in kafka_times],
    )


def _metric_records(
    delays: Delays,
    elapsed_s: float,
    kinds: Mapping[str, int],
    *,
    group: str,
    backend: str,
) -> Iterator[None]:
    # One delay record per event (the histogram's count is the events'): the SDK's record
    # is the costliest step per event after the write itself (docs/benchmarks.md). The
    # events counter moves after the delays, so a scrape never shows more events than
    # delays measured. A slice of them between two yields to the event loop.
    for histogram, values in (
        (instruments.delay, delays.total),
        (instruments.delay_minio, delays.minio),
        (instruments.delay_consumer, delays.consumer),
    ):
        record = histogram.record
        for start in range(0, len(values), _RECORD_SLICE):
            for delay in values[start : start + _RECORD_SLICE]:
                record(delay)
            yield
    instruments.batch_duration.record(elapsed_s, {"backend": backend})
    for kind, count in kinds.items():
        instruments.events.add(count, {"group": group, "kind": kind})


class DeferredRecords:
    """Metric records made in the event loop's idle time instead of between two batches.

    A batch's thousands of per-event records (a few microseconds each in the OpenTelemetry
    SDK) would otherwise hold up the next batch's write; here they run as a task, in
    slices, while the next write waits on the database, and never while the batch after it
    is decoded (``held_off``): the writer waits for that batch, and with the records taking
    turns with its decoding it waited in a quarter of the batches (its decoding and the
    records cost the event loop about as much each). Batches are recorded in order;
    ``flush`` (at the end of ``run``) waits for what is left, so nothing is lost on stop.
    """

    def __init__(self) -> None:
        self._pending: asyncio.Task[None] | None = None
        self._free = asyncio.Event()
        self._free.set()

    def record(self, steps: Iterator[None]) -> None:
        self._pending = asyncio.ensure_future(self._run(self._pending, steps, self._free))

    @contextlib.contextmanager
    def held_off(self) -> Iterator[None]:
        """No record is made while the block runs (between two of its awaits)."""
        self._free.clear()
        try:
            yield
        finally:
            self._free.set()

    async def flush(self) -> None:
        if self._pending is not None:
            await asyncio.shield(self._pending)

    @staticmethod
    async def _run(
        before: asyncio.Task[None] | None, steps: Iterator[None], free: asyncio.Event
    ) -> None:
        if before is not None:
            await before
        await free.wait()
        for _ in steps:
            await asyncio.sleep(0)
            await free.wait()
