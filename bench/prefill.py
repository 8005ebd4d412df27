"""The benchmark topic: created fresh, filled with generated events, deleted at the end.

A fresh topic (not the stack's ``minio-events``) means every mode reads exactly the same
N messages and nothing else, and the benchmark leaves no trace on the stack.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from aiokafka.admin import NewTopic

from bench.generate import Message
from consumer.events import parse_message
from consumer.kafka.clients import new_admin, new_producer
from consumer.settings import Settings

PARTITIONS: Final = 4
# Sends are awaited in chunks: enough in flight to keep the producer's batches full,
# few enough that the futures do not pile up in memory for 200 000 messages.
_CHUNK: Final = 5_000


def new_topic_name() -> str:
    return f"bench-events-{uuid.uuid4().hex[:12]}"


async def create_topic(settings: Settings, topic: str, partitions: int = PARTITIONS) -> None:
    admin = new_admin(settings, client_id="bench-prefill")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def delete_topic(settings: Settings, topic: str) -> None:
    admin = new_admin(settings, client_id="bench-prefill")
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


@dataclass
class ParseClock:
    """Time spent in ``parse_message`` while checking: the decode-only ceiling of the
    indexer (one core, no Kafka, no index), to read next to the measured rates."""

    messages: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def verified(messages: Iterable[Message], clock: ParseClock | None = None) -> Iterator[Message]:
    """Pass each message through ``parse_message`` first: a generator bug must fail here,
    loudly, not show up as dead letters (and a wrong rate) in the measurement."""
    clock = clock if clock is not None else ParseClock()
    for message in messages:
        started = time.perf_counter()
        (event,) = parse_message(message.value)
        clock.seconds += time.perf_counter() - started
        clock.messages += 1
        if (event.bucket, event.key, event.event_name) != (
            message.bucket,
            message.object_key,
            message.event_name,
        ):
            raise AssertionError(f"generated message parses to {event!r}, not {message!r}")
        yield message


async def produce(settings: Settings, topic: str, messages: Iterable[Message], total: int) -> None:
    """Send ``messages`` with batching (linger, large batches), printing progress."""
    producer = new_producer(
        settings,
        client_id="bench-prefill",
        linger_ms=20,
        max_batch_size=512 * 1024,
        acks=1,
    )
    await producer.start()
    started = time.perf_counter()
    pending: list[asyncio.Future[object]] = []
    sent = 0
    try:
        for message in messages:
            pending.append(await producer.send(topic, value=message.value, key=message.key))
            sent += 1
            if len(pending) >= _CHUNK:
                await asyncio.gather(*pending)
                pending.clear()
                _progress(sent, total, started)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    if pending:  # the last chunk was partial, not printed yet
        _progress(sent, total, started, final=True)


def _progress(sent: int, total: int, started: float, *, final: bool = False) -> None:
    if not final and sent % (total // 10 or 1) >= _CHUNK:
        return
    elapsed = time.perf_counter() - started
    print(
        f"  produced {sent:>8,} / {total:,} ({sent / max(elapsed, 1e-9):,.0f} msg/s)",
        flush=True,
    )
