"""The dead-letter topic: what goes there, with which headers, and how it is written."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from consumer.errors import KafkaUnavailable
from consumer.telemetry import instruments

log = structlog.get_logger(__name__)


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
