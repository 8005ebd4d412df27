"""How far a consumer group is behind a topic (per partition, end offset minus committed)
and how many messages a topic holds.

Measured from outside the group (nothing joins it), so any process can ask: the retention
sweeper before it trusts the index, ``/readyz``, ``/status`` and ``status``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from consumer.errors import KafkaUnavailable
from consumer.kafka.clients import (
    close_client,
    kafka_security_failure,
    new_admin,
    new_consumer,
    topic_partitions,
)
from consumer.settings import Settings

LAG_TIMEOUT_S = 15.0
T = TypeVar("T")


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


class KafkaProbe:
    """One group-less consumer for offset questions: ``async with KafkaProbe(s) as probe``.

    Raises KafkaUnavailable when the brokers do not answer within ``timeout_s`` (or refuse
    the credentials or certificate), ConfigError for bad Kafka security settings.
    """

    def __init__(self, settings: Settings, *, timeout_s: float = LAG_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._settings = settings
        self._bootstrap = settings.kafka_bootstrap_servers
        self._consumer = new_consumer(
            settings,
            client_id="voxpersona-probe",
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(timeout_s * 1000),
        )
        self._admin = new_admin(
            settings,
            client_id="voxpersona-probe-admin",
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def __aenter__(self) -> KafkaProbe:
        try:
            await self._bounded(self._consumer.start(), "connect")
            await self._bounded(self._admin.start(), "connect")
        except KafkaUnavailable as exc:
            await self.close()
            cause = exc.__cause__
            reason = await kafka_security_failure(cause, self._settings) if cause else None
            if reason is None:
                raise
            raise KafkaUnavailable(reason) from cause
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await close_client(self._consumer)
        await close_client(self._admin)

    async def lag(self, group_id: str, topic: str) -> dict[int, int]:
        """The lag of ``group_id`` on every partition of ``topic`` ({} if no topic)."""
        return await self._bounded(self._lag(group_id, topic), f"lag of group {group_id}")

    async def size(self, topic: str) -> int:
        """Messages the topic holds now (end minus first retained offset, summed)."""
        ends, begins = await self._bounded(self._offsets(topic), f"offsets of {topic}")
        return sum(end - begins.get(partition, 0) for partition, end in ends.items())

    async def _lag(self, group_id: str, topic: str) -> dict[int, int]:
        ends, begins = await self._offsets(topic)
        if not ends:
            return {}
        tps = [TopicPartition(topic, partition) for partition in ends]
        offsets = await self._admin.list_consumer_group_offsets(group_id, partitions=tps)
        committed = {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        return lag_by_partition(ends, begins, committed)

    async def _offsets(self, topic: str) -> tuple[dict[int, int], dict[int, int]]:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(self._admin, topic)]
        if not tps:
            return {}, {}
        ends = await self._consumer.end_offsets(tps)
        begins = await self._consumer.beginning_offsets(tps)
        return (
            {tp.partition: offset for tp, offset in ends.items()},
            {tp.partition: offset for tp, offset in begins.items()},
        )

    async def _bounded(self, operation: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(operation, self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            detail = str(exc) or f"no answer within {self._timeout_s:g} s"
            raise KafkaUnavailable(f"Kafka at {self._bootstrap}: {what}: {detail}") from exc


async def group_lag(
    settings: Settings, group_id: str, topic: str, *, timeout_s: float = LAG_TIMEOUT_S
) -> dict[int, int]:
    """The lag of ``group_id`` on every partition of ``topic`` ({} if the topic does not
    exist). Raises KafkaUnavailable when the brokers do not answer in time."""
    async with KafkaProbe(settings, timeout_s=timeout_s) as probe:
        return await probe.lag(group_id, topic)
