"""One measured run, in its own process: ``drain``, ``sqlite``, ``postgres`` or a variant.

A process per run makes the peak RSS (``ru_maxrss``) belong to that mode alone and gives
every run a cold start (imports, connections, group join). The child prints one JSON line
on stdout; the parent collects it.

Timing. ``seconds`` is the active window, from the first batch to the last one handled:
it leaves out what every mode pays once and that does not grow with N (imports, group
join, the burst mode's final half-second poll on an empty topic). For the indexer the
window runs from the first ``apply_batch`` call to the return of the last one, read
through a thin wrapper around the store, so the indexer itself is used unmodified; it
misses the decode of the first batch and the commit of the last one (one batch in
hundreds). The indexer's writer process is started before the window, as the indexer's
own run starts it. ``wall_seconds`` is the whole run, start to return, for reference.

CPU. ``machine_busy_cores`` is the whole machine's CPU time over the active window (every
process: this one, the writer process, the broker, PostgreSQL) divided by the window, from
``/proc/stat``; ``machine_cpu_us_per_event`` is that time per event. On a machine of two
cores a mode near 2.0 is bound by the CPU, not by waiting on anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bench.clients import topic_partitions
from bench.stack_env import settings_for, stack_values
from consumer.events import parse_message
from consumer.index import open_index
from consumer.index.records import BatchResult, Item, KafkaPosition
from consumer.index.writer_process import WriterProcess
from consumer.indexer import BatchApplier, Indexer, Staging
from consumer.kafka.clients import new_consumer
from consumer.logs import configure_logging
from consumer.settings import Settings
from consumer.telemetry import configure_telemetry

MODES: Final = (
    "drain",
    "sqlite",
    "postgres",
    "sqlite-traced",
    "sqlite-alone",
    "postgres-alone",
)
# The indexer modes run with metrics on, as `python -m consumer run` has them (the
# Prometheus reader: every instrument records). "-traced" also records every span into
# the SDK's batch processor, exported to nowhere: the cost of tracing in this process,
# without a collector's.
TRACED_SUFFIX: Final = "-traced"
# "-alone": the index by itself, with everything before it done ahead (see index_alone):
# the ceiling any indexer on that database reaches, however it overlaps its stages.
ALONE_SUFFIX: Final = "-alone"
# The parent passes the index URL here, not on the command line: a PostgreSQL URL holds
# the password, and command lines are visible to every user of the machine.
INDEX_URL_ENV: Final = "BENCH_INDEX_URL"
RSS_INTERVAL_S: Final = 0.5


@dataclass(frozen=True)
class Expected:
    """What the index must hold after the run (from the generator's tally)."""

    events: int
    live_objects: int
    tombstones: int


@dataclass
class Measurement:
    mode: str
    events: int
    seconds: float
    events_per_s: float
    wall_seconds: float
    peak_rss_mb: float
    ru_maxrss_mb: float
    rss_series: list[tuple[float, float]]
    counts: dict[str, int]
    machine_busy_cores: float | None = None
    machine_cpu_us_per_event: float | None = None


class RssSampler:
    """The memory of this process and its descendants (the indexer's writer process and
    the server that starts it; see ``tree_rss_mb``) every ``interval`` seconds, from a
    thread so a busy event loop cannot delay it."""

    def __init__(self, interval: float = RSS_INTERVAL_S) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self.series: list[tuple[float, float]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self._interval):
                return

    def _sample(self) -> None:
        elapsed = round(time.perf_counter() - self._started, 2)
        self.series.append((elapsed, round(tree_rss_mb(), 1)))

    @property
    def peak_mb(self) -> float:
        return max((mb for _, mb in self.series), default=0.0)


def vm_rss_mb() -> float:
    """Current resident set size of this process."""
    return _proc_status_mb("VmRSS:")


def tree_rss_mb() -> float:
    """Current memory of this process and all its descendants: the sum of their
    proportional set sizes (Pss: a page shared by n of them counts 1/n in each, so the
    pages a forked child shares with its parent are counted once)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The parent id follows the ")" that ends the command name.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree, grown = {os.getpid()}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return sum(_pss_mb(pid) for pid in tree)


def _pss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):  # a process that ended meanwhile counts nothing
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process: VmHWM, the high-water mark of its memory.

    ``ru_maxrss`` would be the obvious source, but Linux carries it over ``execve`` from
    the memory the process had before, and Python starts children with vfork: every
    child would report at least the parent's peak. It is kept as ``ru_maxrss_mb``.
    """
    return _proc_status_mb("VmHWM:")


def ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux); see peak_rss_mb."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_mb(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name):
            return int(line.split()[1]) / 1024
    return 0.0


# --- drain: the baseline ------------------------------------------------------------------


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """Seconds of CPU the whole machine has spent busy since boot (every core, every
    process: ``/proc/stat``'s first line less idle and iowait)."""
    fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    ticks = [int(value) for value in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS


@dataclass
class Window:
    """The active window's times: wall (perf_counter) and the machine's busy CPU."""

    started: float
    busy_started: float
    ended: float = 0.0
    busy_ended: float = 0.0

    @classmethod
    def start(cls) -> Window:
        return cls(time.perf_counter(), machine_busy_s())

    def end(self) -> None:
        self.ended = time.perf_counter()
        self.busy_ended = machine_busy_s()

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def busy_s(self) -> float:
        return self.busy_ended - self.busy_started


async def drain(settings: Settings, topic: str) -> tuple[float, int]:
    """Read the whole topic and discard it, as the indexer's consumer would read it (same
    group semantics and fetch size). Returns (active seconds, records read)."""
    consumer = _consumer_like_indexer(settings, f"bench-drain-{os.getpid()}-{time.time_ns()}")
    await consumer.start()
    try:
        consumer.subscribe([topic])
        ends = await _end_offsets(settings, consumer, topic)
        return await _read_to_end(consumer, ends, settings.indexer_batch_max_records)
    finally:
        await consumer.stop()


def _consumer_like_indexer(settings: Settings, group_id: str) -> AIOKafkaConsumer:
    return new_consumer(
        settings,
        client_id=group_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=max(1_048_576, settings.indexer_max_message_bytes + 1024),
    )


async def _end_offsets(
    settings: Settings, consumer: AIOKafkaConsumer, topic: str
) -> dict[TopicPartition, int]:
    ends = await consumer.end_offsets(await topic_partitions(settings, topic))
    return {tp: offset for tp, offset in ends.items() if offset > 0}


async def _read_to_end(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], max_records: int
) -> tuple[float, int]:
    first: float | None = None
    read = 0
    async for batch in _batches_to_end(consumer, ends, max_records):
        if first is None:
            first = time.perf_counter()
        read += sum(len(records) for records in batch.values())
    return time.perf_counter() - (first or time.perf_counter()), read


async def _batches_to_end(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], max_records: int | None = None
) -> AsyncIterator[dict[TopicPartition, list[ConsumerRecord[Any, Any]]]]:
    """The (non-empty) batches of ``getmany`` until every partition reached its end."""
    remaining = dict(ends)
    while remaining:
        batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
        if not batch:
            continue
        yield batch
        for tp, records in batch.items():
            if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                remaining.pop(tp, None)


# --- sqlite / postgres: the indexer ---------------------------------------------------------


class TimedStore:
    """Delegates to what writes batches and notes the window from the first batch applied
    to the last."""

    def __init__(self, inner: BatchApplier) -> None:
        self._inner = inner
        self.window: Window | None = None
        self.batches = 0

    async def apply_batch(self, items: Sequence[Item]) -> BatchResult:
        if self.window is None:
            self.window = Window.start()
        result = await self._inner.apply_batch(items)
        self.window.end()
        self.batches += 1
        return result

    def stage(self, items: Sequence[Item]) -> None:
        if isinstance(self._inner, Staging):
            self._inner.stage(items)


async def index(
    settings: Settings, topic: str, index_url: str, expected: Expected
) -> tuple[Window, dict[str, int]]:
    """Run the real Indexer in burst mode; check it journaled everything. Returns (the
    active window, the index's counts)."""
    store = open_index(index_url)
    await store.start()
    # As the indexer makes its own (INDEX_WRITER_PROCESS), on this run's index.
    process = (
        WriterProcess(index_url, command_timeout_s=settings.index_command_timeout_s)
        if settings.index_writer_process
        else None
    )
    try:
        if process is not None:  # as the indexer's run starts it, ahead of the first batch
            await process.start()
        timed = TimedStore(process or store)
        indexer = Indexer(
            settings,
            store,
            topic=topic,
            group_id=f"bench-indexer-{os.getpid()}-{time.time_ns()}",
            writes=timed,
        )
        stats = await indexer.run(burst=True)
        if process is not None:  # as the indexer's run ends it (the counts are the bench's)
            await process.close()
        counts = await store.counts()
    finally:
        if process is not None:
            await process.close()
        await store.close()
    _check(stats.journaled, stats.dead_lettered, counts, expected)
    assert timed.window is not None
    return timed.window, {**counts, "batches": timed.batches}


async def index_alone(
    settings: Settings, topic: str, index_url: str, expected: Expected
) -> tuple[Window, dict[str, int]]:
    """The index's own pace: the whole topic read and decoded first (not timed), then
    ``apply_batch`` over batches of INDEXER_BATCH_MAX_RECORDS events (timed), one after
    the other, as the indexer would hand them over if reading and decoding cost nothing.
    Returns (the active window, the index's counts)."""
    items = await _decoded_topic(settings, topic)
    store = open_index(index_url)
    await store.start()
    try:
        size = settings.indexer_batch_max_records
        window = Window.start()
        for start in range(0, len(items), size):
            await store.apply_batch(items[start : start + size])
        window.end()
        counts = await store.counts()
    finally:
        await store.close()
    _check(len(items), 0, counts, expected)
    return window, {**counts, "batches": -(-len(items) // size)}


async def _decoded_topic(settings: Settings, topic: str) -> list[Item]:
    """Every event of ``topic`` with its position, in the order the consumer fetched it."""
    consumer = _consumer_like_indexer(settings, f"bench-alone-{os.getpid()}-{time.time_ns()}")
    await consumer.start()
    items: list[Item] = []
    try:
        consumer.subscribe([topic])
        ends = await _end_offsets(settings, consumer, topic)
        async for batch in _batches_to_end(consumer, ends):
            for tp, records in batch.items():
                for record in records:
                    position = KafkaPosition(tp.topic, tp.partition, record.offset)
                    items += [(event, position) for event in parse_message(record.value)]
    finally:
        await consumer.stop()
    return items


def _check(journaled: int, dead: int, counts: dict[str, int], expected: Expected) -> None:
    """Fail loudly: a fast indexer that dropped events would be a meaningless figure."""
    problems = []
    if journaled != expected.events:
        problems.append(f"journaled {journaled}, expected {expected.events}")
    if dead:
        problems.append(f"{dead} messages dead-lettered")
    if counts.get("journal") != expected.events:
        problems.append(f"journal has {counts.get('journal')} rows, expected {expected.events}")
    if counts.get("objects") != expected.live_objects:
        problems.append(f"objects {counts.get('objects')}, expected {expected.live_objects}")
    if counts.get("tombstones") != expected.tombstones:
        problems.append(f"tombstones {counts.get('tombstones')}, expected {expected.tombstones}")
    if problems:
        raise AssertionError("index check failed: " + "; ".join(problems))


# --- entry point -----------------------------------------------------------------------------


def run_child(mode: str, topic: str, expected: Expected, batch: int | None) -> Measurement:
    """Measure one mode; the caller prints the result as one JSON line."""
    configure_logging("warning", json_output=True)
    overrides: dict[str, object] = {"LOG_LEVEL": "warning"}
    if batch is not None:
        overrides["INDEXER_BATCH_MAX_RECORDS"] = batch
    settings = settings_for(stack_values(), **overrides)
    if mode != "drain":
        _telemetry_on(traced=mode.endswith(TRACED_SUFFIX))
    started = time.perf_counter()
    busy_cores: float | None = None
    cpu_us_per_event: float | None = None
    with RssSampler() as sampler:
        if mode == "drain":
            seconds, read = asyncio.run(drain(settings, topic))
            if read != expected.events:
                raise AssertionError(f"drain read {read} records, expected {expected.events}")
            counts = {"records": read}
        else:
            run = index_alone if mode.endswith(ALONE_SUFFIX) else index
            window, counts = asyncio.run(run(settings, topic, os.environ[INDEX_URL_ENV], expected))
            _flush_spans()
            seconds = window.seconds
            busy_cores = round(window.busy_s / seconds, 2)
            cpu_us_per_event = round(window.busy_s / expected.events * 1e6, 1)
    wall = time.perf_counter() - started
    return Measurement(
        mode=mode,
        events=expected.events,
        seconds=round(seconds, 3),
        events_per_s=round(expected.events / seconds, 1),
        wall_seconds=round(wall, 3),
        # The process's own high-water mark, or the tree's (the writer process included)
        # at a sample, whichever is higher.
        peak_rss_mb=round(max(peak_rss_mb(), sampler.peak_mb), 1),
        ru_maxrss_mb=round(ru_maxrss_mb(), 1),
        rss_series=sampler.series,
        counts=counts,
        machine_busy_cores=busy_cores,
        machine_cpu_us_per_event=cpu_us_per_event,
    )


class _Discard:
    """A span exporter that drops what it gets (SpanExporter's interface)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _telemetry_on(*, traced: bool) -> None:
    if traced:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(_Discard()))  # type: ignore[arg-type]
        trace.set_tracer_provider(provider)
    # No OTEL_* exporter in the environment: metrics on (Prometheus reader), no tracing
    # beyond the provider above.
    configure_telemetry({})


def _flush_spans() -> None:
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()


def print_measurement(measurement: Measurement) -> None:
    print(json.dumps(asdict(measurement)), flush=True)
