"""How far a consumer group is behind a topic: per partition, end offset minus committed.

Measured from outside the group (nothing joins it), so any process can ask: the retention
sweeper before it trusts the index, ``status`` and the metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from consumer.fetching import KafkaUnavailable
from consumer.settings import Settings

LAG_TIMEOUT_S = 15.0


def lag_by_partition(
    ends: Mapping[int, int], begins: Mapping[int, int], committed: Mapping[int, int | None]
) -> dict[int, int]:
    """Events not yet consumed per partition. A partition without a commit counts from its
    first retained offset (the group would start there); a commit below it (the topic's
    retention removed events the group never read) counts the same way."""
    lag: dict[int, int] = {}
    for partition, end in ends.items():
        first = begins.get(partition, 0)
        position = committed.get(partition)
        if position is None or position < first:
            position = first
        lag[partition] = max(0, end - position)
    return lag


async def group_lag(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """The lag of ``group_id`` on every partition of ``topic`` ({} if the topic does not
    exist). Raises KafkaUnavailable when the brokers do not answer in time."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        client_id=f"voxpersona-lag-{group_id}",
        request_timeout_ms=int(LAG_TIMEOUT_S * 1000),
    )
    try:
        return await asyncio.wait_for(_measure(consumer, topic), LAG_TIMEOUT_S)
    except (KafkaError, TimeoutError) as exc:
        raise KafkaUnavailable(
            f"cannot measure the lag of group {group_id} on {topic}: {exc or 'timed out'}"
        ) from exc
    finally:
        await consumer.stop()


async def _measure(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    await consumer.start()
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        return {}
    ends = await consumer.end_offsets(tps)
    begins = await consumer.beginning_offsets(tps)
    committed = {tp.partition: await consumer.committed(tp) for tp in tps}
    return lag_by_partition(
        {tp.partition: offset for tp, offset in ends.items()},
        {tp.partition: offset for tp, offset in begins.items()},
        committed,
    )
