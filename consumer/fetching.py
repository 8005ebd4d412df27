"""Kafka plumbing shared by the indexer and the processor workers: their clients, the
dead-letter writes, pausing fetches during long work, and the burst-mode drain check."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from consumer.errors import ConnectionFailed
from consumer.kafka_client import (
    kafka_client_options,
    kafka_security_failure,
    kafka_unreachable,
)
from consumer.settings import Settings
from consumer.telemetry import instruments

log = structlog.get_logger(__name__)


class KafkaUnavailable(ConnectionFailed):
    """The broker could not take a DLQ write or an offset commit right now."""


@dataclass(frozen=True)
class DeadLetter:
    """A message that cannot be indexed or processed, with the reason it goes to the DLQ."""

    record: ConsumerRecord[bytes, bytes]
    error_class: str
    reason: str


def dead_letter_headers(
    letter: DeadLetter, *, group_id: str, now: datetime
) -> list[tuple[str, bytes]]:
    """Headers that tell a person (or a replay tool) what failed, why, and where it was."""
    record = letter.record
    return [
        ("x-error-class", letter.error_class.encode()),
        ("x-error-reason", _utf8_prefix(letter.reason, 1000)),
        ("x-original-topic", record.topic.encode()),
        ("x-original-partition", str(record.partition).encode()),
        ("x-original-offset", str(record.offset).encode()),
        ("x-original-timestamp-ms", str(record.timestamp).encode()),
        ("x-consumer-group", group_id.encode()),
        ("x-failed-at", now.isoformat().encode()),
    ]


def _utf8_prefix(text: str, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of UTF-8, never cutting a character in half."""
    return text.encode()[:max_bytes].decode("utf-8", "ignore").encode()


def new_clients(settings: Settings, group_id: str) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """An (unstarted) consumer of ``group_id`` that commits by hand, from the earliest
    offset on first start, and the idempotent producer its dead letters go through.
    Raises ConfigError (bad Kafka security settings)."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"voxpersona-{group_id}",
        max_partition_fetch_bytes=max(1_048_576, settings.indexer_max_message_bytes + 1024),
    )
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        enable_idempotence=True,
        client_id=f"voxpersona-{group_id}-dlq",
    )
    return consumer, producer


async def start_clients(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, settings: Settings
) -> None:
    """Start both; on failure stop both and raise KafkaUnavailable (saying so when the
    credentials or the broker's certificate were refused)."""
    try:
        await consumer.start()
        await producer.start()
    except KafkaError as exc:
        await stop_clients(consumer, producer)
        reason = await kafka_security_failure(exc, settings)
        raise KafkaUnavailable(reason or kafka_unreachable(exc, settings)) from exc


async def stop_clients(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    for client in clients:
        if client is not None:
            with contextlib.suppress(KafkaError):
                await client.stop()


async def send_dead_letters(
    producer: AIOKafkaProducer, topic: str, letters: Sequence[DeadLetter], *, group_id: str
) -> None:
    """Write ``letters`` (original key and value, the reason in headers) and wait for the
    acks. Raises KafkaUnavailable (retriable) when the broker does not take them."""
    now = datetime.now(UTC)
    try:
        sends = [
            await producer.send(
                topic,
                value=letter.record.value,
                key=letter.record.key,
                headers=dead_letter_headers(letter, group_id=group_id, now=now),
            )
            for letter in letters
        ]
        await asyncio.gather(*sends)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot write to {topic}: {exc}") from exc
    for error_class, count in Counter(letter.error_class for letter in letters).items():
        instruments.dead_letters.add(count, {"group": group_id, "error_class": error_class})
    for letter in letters:
        log.warning(
            "dead-lettered",
            error_class=letter.error_class,
            reason=letter.reason,
            topic=letter.record.topic,
            partition=letter.record.partition,
            offset=letter.record.offset,
        )


class FetchPause:
    """Pauses fetching while a long operation runs, and keeps the consumer in its group.

    ``poll()`` is called repeatedly during the operation: it pauses every assigned
    partition (again, after a rebalance) and polls Kafka, which keeps
    ``max.poll.interval.ms`` satisfied. A partition assigned by a rebalance during that
    poll is not paused yet and may return records: they are rewound, so they are read
    again after ``resume()``, never skipped.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._paused: set[TopicPartition] = set()

    async def poll(self) -> bool:
        """Pause and poll once; True when this call paused partitions not paused before."""
        assignment = self._consumer.assignment()
        newly_paused = bool(assignment - self._paused)
        if newly_paused:
            self._consumer.pause(*assignment)
            self._paused = set(assignment)
        stray = await self._consumer.getmany(timeout_ms=0)
        for tp, records in stray.items():
            self._consumer.seek(tp, records[0].offset)
        return newly_paused

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def resume(self) -> None:
        if self._paused:
            assignment = self._consumer.assignment()
            self._consumer.resume(*(tp for tp in self._paused if tp in assignment))
            self._paused = set()


def record_lag(
    consumer: AIOKafkaConsumer,
    batch: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]],
    group_id: str,
) -> None:
    """The lag of each partition of ``batch`` once it is done: the broker's high watermark
    (as of the fetch) minus the next offset to read. Free: no request."""
    for tp, records in batch.items():
        highwater = consumer.highwater(tp)
        if records and highwater is not None:
            lag = max(0, highwater - (records[-1].offset + 1))
            instruments.lag.set(
                lag, {"group": group_id, "topic": tp.topic, "partition": str(tp.partition)}
            )


async def drained(consumer: AIOKafkaConsumer) -> bool:
    """True when every assigned partition's position has reached its end offset."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    ends = await consumer.end_offsets(list(assignment))
    for tp in assignment:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


async def reached(consumer: AIOKafkaConsumer, stop_at: Mapping[TopicPartition, int]) -> bool:
    """True when every partition of ``stop_at`` is assigned and read up to its offset."""
    assignment = consumer.assignment()
    for tp, offset in stop_at.items():
        if tp not in assignment or await consumer.position(tp) < offset:
            return False
    return True
