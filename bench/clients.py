"""The benchmarks' Kafka clients: one constructor per kind, every one with the settings'
security options, so a benchmark against a secured Kafka works like the consumer does.

Each benchmark module builds its clients here and nowhere else; the constructors have
the signatures of the package's client factory.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumer.kafka_client import kafka_client_options
from consumer.settings import Settings


def new_consumer(settings: Settings, *, client_id: str, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**kafka_client_options(settings), client_id=client_id, **options)


def new_producer(settings: Settings, *, client_id: str, **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**kafka_client_options(settings), client_id=client_id, **options)


def new_admin(settings: Settings, *, client_id: str, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka_client_options(settings), client_id=client_id, **options)


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, sorted, from the admin client's topic metadata (of every
    topic: naming one would let a broker with auto-creation on create it)."""
    admin = new_admin(settings, client_id="bench-admin")
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return [
        TopicPartition(topic, number)
        for entry in described
        if entry["topic"] == topic and entry["error_code"] == 0
        for number in sorted(p["partition"] for p in entry["partitions"])
    ]


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic`` (the next offset to be written)."""
    partitions = await topic_partitions(settings, topic)
    consumer = new_consumer(settings, client_id="bench-offsets", enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}
