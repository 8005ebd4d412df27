"""Topic metadata for the benchmarks, through the package's Kafka client factory.

Every Kafka client of the benchmarks is built by ``consumer.kafka.clients`` (``new_consumer``,
``new_producer``, ``new_admin``), with the settings' security options, so a benchmark
against a TLS / SASL Kafka works like the consumer does.
"""

from __future__ import annotations

from aiokafka import TopicPartition

from consumer.kafka import clients
from consumer.settings import Settings


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, sorted, from the admin client's topic metadata."""
    admin = clients.new_admin(settings, client_id="bench-admin")
    await admin.start()
    try:
        numbers = await clients.topic_partitions(admin, topic)
    finally:
        await admin.close()
    return [TopicPartition(topic, number) for number in numbers]


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic`` (the next offset to be written)."""
    partitions = await topic_partitions(settings, topic)
    consumer = clients.new_consumer(settings, client_id="bench-offsets", enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}
