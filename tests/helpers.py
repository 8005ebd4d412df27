"""Small test helpers with I/O: what MinIO published to Kafka, committed offsets, polling."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from minio import Minio

if TYPE_CHECKING:
    from tests.conftest import StackEndpoints

Listing = set[tuple[str, str, int, str]]  # (key, version id, size, etag)


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


class Published:
    """Waits until MinIO has delivered a bucket's events to Kafka (delivery from MinIO's
    queue_dir store is asynchronous), so a burst run afterwards is deterministic."""

    def __init__(self, stack: StackEndpoints) -> None:
        self._stack = stack
        self._start: dict[int, int] = {}

    async def mark(self) -> None:
        self._start = await topic_end_offsets(
            self._stack.values["KAFKA_BOOTSTRAP_SERVERS"], self._stack.events_topic
        )

    @property
    def start(self) -> dict[int, int]:
        """The topic's end offsets when ``mark`` ran: where this test's events begin."""
        return dict(self._start)

    async def wait(self, bucket: str, expected: int) -> list[KafkaRecord]:
        found = await read_bucket_events(
            self._stack.values["KAFKA_BOOTSTRAP_SERVERS"],
            self._stack.events_topic,
            bucket,
            self._start,
            expected,
        )
        assert len(found) == expected, [r.value["EventName"] for r in found]
        return found


async def until(condition: Callable[[], bool], message: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, message
        await asyncio.sleep(0.1)


async def until_async(condition: Callable[[], Any], message: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, message
        await asyncio.sleep(0.1)


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int]:
    """The group's committed offset per partition (partitions without a commit omitted)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        result = {}
        for partition in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, partition))
            if offset is not None:
                result[partition] = offset
        return result
    finally:
        await consumer.stop()


def count_rows(index_file: Path, sql: str, *params: object) -> int:
    """``SELECT count(*) …`` straight from a SQLite index file, while another process
    writes it (faster than a CLI process); 0 before the file or its schema exists."""
    if not index_file.exists():
        return 0
    with sqlite3.connect(index_file, timeout=5) as conn:
        try:
            row = conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError:  # schema not created yet
            return 0
    return int(row[0])


def bucket_listing(minio: Minio, bucket: str, *, versions: bool = False) -> Listing:
    """MinIO's own view: the latest non-delete-marker of each key, or with ``versions``
    every version that is not a delete marker (the index keeps one row per version)."""
    found = set()
    for obj in minio.list_objects(bucket, recursive=True, include_version=versions):
        if obj.is_delete_marker:
            continue
        version = (obj.version_id or "") if versions else ""
        found.add((obj.object_name or "", version, obj.size or 0, (obj.etag or "").strip('"')))
    return found


async def commit_group(bootstrap: str, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Set ``group``'s committed offsets on ``topic`` (the group must have no member):
    a new group starts where we say, a stopped one is rewound for a replay."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = {TopicPartition(topic, p): o for p, o in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()
