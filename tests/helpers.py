"""Small test helpers with I/O: read what MinIO published to Kafka for one bucket."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(frozen=True)
class KafkaRecord:
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]


async def topic_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of every partition: read from here to see only what comes after."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_bucket_events(
    bootstrap: str,
    topic: str,
    bucket: str,
    start: dict[int, int],
    expected: int,
    timeout_s: float = 30.0,
) -> list[KafkaRecord]:
    """Records about ``bucket`` published after ``start``, until ``expected`` arrived.

    Returns what arrived by the deadline (possibly fewer), in per-partition order.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    found: list[KafkaRecord] = []
    try:
        tps = [TopicPartition(topic, p) for p in start]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        deadline = time.monotonic() + timeout_s
        while len(found) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for message in messages:
                    value = json.loads(message.value)
                    if value["Key"].split("/", 1)[0] == bucket:
                        found.append(KafkaRecord(tp.partition, message.offset, message.key, value))
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return found
