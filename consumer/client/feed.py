"""The bot's feed of finished results: ``VoxClient.processed(...)``.

The results bucket's own notifications (minio-notify.json, rule ``results-json``) arrive on
the events topic like every other bucket's. The feed reads that topic in its own consumer
group (KAFKA_RESULTS_GROUP_ID), keeps the creations of result documents that match its
filter, reads each document from the results bucket and hands it over. An offset is
committed once the result read after it is asked for, so a bot that crashes while
handling a result gets it again (at least once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from consumer.errors import ConnectionFailed, NotFound
from consumer.events import MalformedEvent, ObjectEvent, parse_message, writes_content
from consumer.index.store import AsyncLifecycle
from consumer.kafka.clients import new_consumer
from consumer.results import ProcessedResult, ResultLocation, parse_result_key
from consumer.settings import Settings

ReadDocument = Callable[[str, str], Awaitable[dict[str, Any]]]  # (bucket, key) -> JSON


@dataclass(frozen=True)
class FeedFilter:
    """Which results a feed hands over; None: any."""

    results_bucket: str
    bucket: str | None = None
    key: str | None = None
    processors: frozenset[str] | None = None

    def wanted(self, event: ObjectEvent) -> ResultLocation | None:
        """The location of a new result the filter keeps; None for anything else. Pure."""
        if event.bucket != self.results_bucket or not writes_content(event):
            return None
        location = parse_result_key(event.key)
        if location is None:
            return None
        if self.bucket is not None and location.bucket != self.bucket:
            return None
        if self.key is not None and location.key != self.key:
            return None
        if self.processors is not None and location.processor not in self.processors:
            return None
        return location


class ProcessedFeed(AsyncLifecycle):
    """``async for result in feed`` (or ``async with feed:`` to join the group first, so
    that nothing written after it returns is missed even on a first start)."""

    def __init__(
        self,
        settings: Settings,
        wanted: FeedFilter,
        read_document: ReadDocument,
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        join_timeout_s: float = 30.0,
    ) -> None:
        self._settings = settings
        self._filter = wanted
        self._read = read_document
        self._topic = settings.kafka_events_topic
        self.group_id = group_id or settings.kafka_results_group_id
        self._from_beginning = from_beginning
        self._join_timeout_s = join_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: list[ConsumerRecord[bytes, bytes]] = []
        self._read_up_to: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def __repr__(self) -> str:
        return f"ProcessedFeed(group={self.group_id!r}, topic={self._topic!r})"

    async def start(self) -> None:
        """Join the group and fix the starting positions. Idempotent. Raises
        ConnectionFailed when Kafka cannot be reached or the group not joined in time."""
        if self._consumer is not None:
            return
        consumer = new_consumer(
            self._settings,
            client_id=f"voxpersona-{self.group_id}",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self._from_beginning else "latest",
        )
        try:
            await consumer.start()
            consumer.subscribe([self._topic])
            await self._join(consumer)
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            raise ConnectionFailed(f"results feed: Kafka unreachable ({exc})") from exc
        self._consumer = consumer

    async def _join(self, consumer: AIOKafkaConsumer) -> None:
        deadline = asyncio.get_running_loop().time() + self._join_timeout_s
        while not consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no partitions assigned in {self._join_timeout_s:g} s")
            self._keep(await consumer.getmany(timeout_ms=200))
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolves "latest" now, not at the first fetch

    async def close(self) -> None:
        """Commit what was handed over, leave the group. Idempotent."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            await self._commit(consumer)
        finally:
            await consumer.stop()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ProcessedResult:
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        await self._commit(consumer)  # the result handed over before this one is done
        while True:
            while self._pending:
                record = self._pending.pop(0)
                self._read_up_to[TopicPartition(record.topic, record.partition)] = record.offset + 1
                result = await self._result_of(record)
                if result is not None:
                    return result
            self._keep(await consumer.getmany(timeout_ms=1000))

    def _keep(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp in sorted(batch, key=lambda tp: tp.partition):
            self._pending.extend(batch[tp])

    async def _result_of(self, record: ConsumerRecord[bytes, bytes]) -> ProcessedResult | None:
        try:
            events = parse_message(record.value)
        except MalformedEvent:
            return None  # the indexer dead-letters it
        for event in events:
            location = self._filter.wanted(event)
            if location is None:
                continue
            try:
                document = await self._read(self._filter.results_bucket, event.key)
            except NotFound:
                continue  # overwritten or removed since: a newer event follows
            return ProcessedResult(
                location.bucket,
                location.key,
                location.version_id,
                location.processor,
                "done",
                document=document,
                result_key=event.key,
            )
        return None

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        due = {
            tp: offset
            for tp, offset in self._read_up_to.items()
            if self._committed.get(tp) != offset and tp in consumer.assignment()
        }
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError:
            return  # not fatal: the results are handed over again after a restart
        self._committed.update(due)


def processors_filter(processors: Collection[str] | None) -> frozenset[str] | None:
    return frozenset(processors) if processors is not None else None
