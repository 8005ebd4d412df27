"""The index alone over generated events: ``apply_batch`` batch after batch, nothing else.

    python bench/index_alone.py --url sqlite:////tmp/run/index.sqlite3 \\
        [--events 200000] [--batch 2000] [--templates bench/results/templates.json]

The figure docs/benchmarks.md compares between two versions of the index code (issue 28's
"the index alone, before and after"): run this file with ``PYTHONPATH`` at each checkout
in turn, alternated, each time on a fresh index (a new SQLite path or an empty PostgreSQL
database). Run by its path, it imports ``consumer`` and ``bench.generate`` from
``PYTHONPATH``, so the same script measures any checkout whose ``open_index`` and
``apply_batch`` it can call.

No Kafka: events are cloned by ``bench.generate`` from real MinIO messages (read from
``--templates``, or captured from the stack's MinIO and written there when the file does
not exist), decoded by ``parse_message`` and given Kafka positions (4 partitions), then
applied in batches of ``--batch``. Only ``apply_batch`` is timed, in wall time and in the
process's CPU time (every thread's). Prints one JSON line: events, seconds, events/s, CPU
seconds, CPU µs an event and the index's counts at the end, which must be the same for
every version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

if not __package__:
    # Run by its path: the checkout named by PYTHONPATH comes first; without one, the
    # checkout this file is in (appended, so PYTHONPATH still wins).
    sys.path.append(str(Path(__file__).resolve().parents[1]))

# (imported after the path is set)
from bench.generate import EventFactory, Message
from consumer.events import parse_message
from consumer.index import open_index
from consumer.index.records import Item, KafkaPosition

# The same stream for every run and version: the generator's clock starts here.
_START_NS: Final = 1_780_000_000_000_000_000
_BUCKET: Final = "audio"
_PARTITIONS: Final = 4
_TOPIC: Final = "t"  # as in the runs docs/benchmarks.md reports


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/index_alone.py", description=__doc__)
    parser.add_argument("--url", required=True, help="a fresh index's INDEX_URL")
    parser.add_argument("--events", type=int, default=200_000, help="events (200000)")
    parser.add_argument("--batch", type=int, default=2_000, help="events a batch (2000)")
    parser.add_argument(
        "--templates",
        type=Path,
        default=Path("bench/results/templates.json"),
        help="captured MinIO messages to clone (captured from the stack if missing)",
    )
    return parser.parse_args(argv)


def batches(messages: Iterator[Message], size: int) -> Iterator[list[Item]]:
    """The decoded events of ``messages`` in batches of at least ``size`` (a message may
    hold several), each with a Kafka position spread over the partitions."""
    batch: list[Item] = []
    for offset, message in enumerate(messages, start=1):
        position = KafkaPosition(_TOPIC, offset % _PARTITIONS, offset)
        batch += [(event, position) for event in parse_message(message.value)]
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def measure(url: str, messages: Iterator[Message], size: int) -> dict[str, Any]:
    """Apply the batches of ``messages`` to the index at ``url``; only the writes timed
    (the next batch is generated and decoded between them)."""
    store = open_index(url)
    await store.start()
    seconds = cpu = 0.0
    events = 0
    try:
        for batch in batches(messages, size):
            started, cpu_started = time.perf_counter(), time.process_time()
            await store.apply_batch(batch)
            seconds += time.perf_counter() - started
            cpu += time.process_time() - cpu_started
            events += len(batch)
        counts = await store.counts()
    finally:
        await store.close()
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
        "counts": counts,
    }


def templates(path: Path) -> dict[str, Any]:
    """The captured messages at ``path``; captured from the stack first if missing."""
    if not path.exists():
        from bench.stack_env import settings_for, stack_values
        from bench.templates import capture_templates

        captured = capture_templates(settings_for(stack_values(), LOG_LEVEL="warning"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(captured, indent=1), encoding="utf-8")
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    factory = EventFactory(templates(args.templates), bucket=_BUCKET, start_ns=_START_NS)
    result = asyncio.run(measure(args.url, factory.messages(args.events), args.batch))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
