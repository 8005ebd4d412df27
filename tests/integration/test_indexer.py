"""The indexer against the real stack: MinIO → Kafka → index, at least once and idempotent.

Every test uses its own consumer group (and, where it produces messages itself, its own
topics), reads the shared events topic from the start, and asserts only on its own bucket.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from minio import Minio
from minio.commonconfig import Tags

from consumer.index import ObjectQuery, SqliteIndex, open_index
from consumer.indexer import Indexer
from consumer.settings import Settings
from tests.conftest import Backend, StackEndpoints, unique_name
from tests.helpers import (
    Published,
    commit_group,
    committed_offsets,
    until,
    until_async,
)

pytestmark = pytest.mark.integration

KEYS = ["user_7/a b+c%d/голос.ogg", "user_7/second.ogg", "shared/третий файл.wav"]


def _put(minio: Minio, bucket: str, key: str, body: bytes, **meta: str) -> None:
    minio.put_object(
        bucket, key, io.BytesIO(body), len(body), content_type="audio/ogg", metadata=meta or None
    )


def _settings(
    stack: StackEndpoints, tmp_path: Path, index_url: str | None = None, **overrides: object
) -> Settings:
    return stack.settings(
        INDEX_URL=index_url or f"sqlite:///{tmp_path / 'index.sqlite3'}",
        MINIO_RETRY_BACKOFF=0.4,
        **overrides,
    )


async def _index_once(settings: Settings, group: str, topic: str | None = None) -> Indexer:
    async with open_index(settings.index_url) as store:
        indexer = Indexer(settings, store, group_id=group, topic=topic)
        await asyncio.wait_for(indexer.run(burst=True), timeout=60)
    return indexer


async def test_uploads_overwrites_tags_and_deletes_are_indexed(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    tmp_path: Path,
    backend: Backend,
) -> None:
    bucket = make_bucket("idx")
    published = Published(stack)
    await published.mark()
    for key in KEYS:
        _put(minio, bucket, key, f"body of {key}".encode(), **{"session-type": "interview"})
    _put(minio, bucket, KEYS[1], b"second version, longer", **{"session-type": "lecture"})
    tags = Tags.new_object_tags()
    tags["reviewed"] = "yes"
    minio.set_object_tags(bucket, KEYS[0], tags)
    minio.remove_object(bucket, KEYS[2])
    minio.remove_object(bucket, "never-was.ogg")
    await published.wait(bucket, 7)

    settings = _settings(stack, tmp_path, backend.url)
    # The group starts at this test's first event: earlier tests (the fault suite's poison
    # flood among them) share the topic, and this test counts only its own dead letters.
    group = unique_name("g")
    await commit_group(settings.kafka_bootstrap_servers, group, stack.events_topic, published.start)
    indexer = await _index_once(settings, group)
    assert indexer.stats.dead_lettered == 0

    async with open_index(settings.index_url) as store:
        live = await store.list_objects(ObjectQuery(bucket=bucket))
        assert [r.key for r in live] == sorted(KEYS[:2])
        first, second = (next(r for r in live if r.key == k) for k in KEYS[:2])
        assert first.user_id == "7"
        assert first.size == len(f"body of {KEYS[0]}".encode())
        assert first.metadata["session-type"] == "interview"
        assert first.last_event_name == "s3:ObjectCreated:PutTagging"
        assert second.size == len(b"second version, longer")
        assert second.metadata["session-type"] == "lecture"

        assert [
            r.key for r in await store.list_objects(ObjectQuery(bucket=bucket, user_id="7"))
        ] == sorted(KEYS[:2])
        assert [
            r.key
            for r in await store.list_objects(ObjectQuery(bucket=bucket, prefix="user_7/a b+"))
        ] == [KEYS[0]]
        found = await store.list_objects(
            ObjectQuery(bucket=bucket, metadata={"session-type": "lecture"})
        )
        assert [r.key for r in found] == [KEYS[1]]

        deleted = await store.get_object(bucket, KEYS[2])
        assert deleted is not None
        assert deleted.deleted

        journal = await store.journal(bucket=bucket, limit=100)
        names = sorted(entry.event_name for entry in journal)
        assert names == sorted(
            ["s3:ObjectCreated:Put"] * 4
            + ["s3:ObjectCreated:PutTagging", "s3:ObjectRemoved:Delete", "s3:ObjectRemoved:NoOP"]
        )
        assert all(entry.kafka is not None for entry in journal)


async def test_redelivery_changes_nothing(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    tmp_path: Path,
    backend: Backend,
) -> None:
    bucket = make_bucket("dup")
    published = Published(stack)
    await published.mark()
    for key in KEYS:
        _put(minio, bucket, key, b"x")
    await published.wait(bucket, len(KEYS))
    settings = _settings(stack, tmp_path, backend.url)
    await _index_once(settings, unique_name("g"))
    async with open_index(settings.index_url) as store:
        before = await store.list_objects(ObjectQuery(bucket=bucket))
        journal_before = await store.counts()

    # A second group re-reads the same events: every one is a duplicate.
    again = await _index_once(settings, unique_name("g"))
    assert again.stats.journaled == 0
    assert again.stats.duplicates == again.stats.events > 0
    async with open_index(settings.index_url) as store:
        assert await store.list_objects(ObjectQuery(bucket=bucket)) == before
        assert await store.counts() == journal_before


async def test_poison_messages_go_to_the_dlq_and_are_committed_past(
    stack: StackEndpoints, make_topic: Callable[..., object], tmp_path: Path
) -> None:
    events_topic = await make_topic("events", 2)  # type: ignore[misc]
    dlq_topic = await make_topic("dlq", 1)  # type: ignore[misc]
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    settings = _settings(stack, tmp_path, KAFKA_DLQ_TOPIC=dlq_topic, INDEXER_MAX_MESSAGE_BYTES=4096)
    valid = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": "poison-bucket/ok.ogg",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "eventTime": "2026-11-21T09:00:00.000Z",
                "eventName": "s3:ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "poison-bucket"},
                    "object": {"key": "ok.ogg", "size": 3, "eTag": "abc", "sequencer": "1A"},
                },
            }
        ],
    }
    poison = {
        "not_json": b"this is not json",
        "not_utf8": b"\xff\xfe\x00binary\x80",
        "wrong_schema": json.dumps({"Records": [{"eventName": "s3:ObjectCreated:Put"}]}).encode(),
        "oversized": json.dumps({**valid, "padding": "x" * 8000}).encode(),
    }
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for name, value in poison.items():
            await producer.send_and_wait(events_topic, value, key=name.encode(), partition=0)
        await producer.send_and_wait(
            events_topic, json.dumps(valid).encode(), key=b"poison-bucket/ok.ogg", partition=1
        )
    finally:
        await producer.stop()

    group = unique_name("g")
    indexer = await _index_once(settings, group, topic=events_topic)
    assert indexer.stats.dead_lettered == len(poison)
    async with open_index(settings.index_url) as store:
        record = await store.get_object("poison-bucket", "ok.ogg")
        assert record is not None
        assert record.size == 3

    dead = await _read_all(bootstrap, dlq_topic, len(poison))
    by_key = {message.key.decode(): message for message in dead}
    assert set(by_key) == set(poison)
    for name, message in by_key.items():
        headers = {k: v.decode() for k, v in message.headers}
        assert headers["x-error-class"] == name
        assert headers["x-error-reason"]
        assert headers["x-original-topic"] == events_topic
        assert headers["x-original-partition"] == "0"
        assert message.value == poison[name]  # the original bytes, untouched

    # Everything was committed past, poison included: a restart reads nothing again.
    assert await committed_offsets(bootstrap, group, events_topic, 2) == {0: len(poison), 1: 1}


async def test_locked_index_pauses_then_resumes_without_loss(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("lock")
    settings = _settings(stack, tmp_path)
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    topic = settings.kafka_events_topic
    group = unique_name("g")
    published = Published(stack)
    await published.mark()
    _put(minio, bucket, "before-lock.ogg", b"x")
    await published.wait(bucket, 1)

    store = SqliteIndex(tmp_path / "index.sqlite3", busy_timeout_s=0.1)
    await store.start()  # the schema exists first, so the lock below is the only obstacle
    blocker = sqlite3.connect(tmp_path / "index.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    locked = True
    indexer = Indexer(settings, store, group_id=group)
    task = asyncio.create_task(indexer.run())
    try:
        await until(lambda: indexer.stats.fetch_pauses >= 1, "the indexer never hit the lock")
        _put(minio, bucket, "during-lock.ogg", b"y")
        await asyncio.sleep(1.0)
        assert indexer.stats.batches == 0, "nothing may be indexed while the index is locked"
        assert await committed_offsets(bootstrap, group, topic, 4) == {}, (
            "committed before the write"
        )

        blocker.execute("ROLLBACK")
        locked = False

        async def both_indexed() -> bool:
            live = await store.list_objects(ObjectQuery(bucket=bucket))
            return {r.key for r in live} == {"before-lock.ogg", "during-lock.ogg"}

        await until_async(both_indexed, "objects not indexed after the lock was released")
        await until_async(
            lambda: committed_offsets(bootstrap, group, topic, 4),
            "offsets not committed after resume",
        )
    finally:
        if locked:
            blocker.execute("ROLLBACK")
        blocker.close()
        indexer.stop()
        await asyncio.wait_for(task, timeout=30)
        await store.close()


async def _read_all(bootstrap: str, topic: str, expected: int) -> list:  # type: ignore[type-arg]
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list = []  # type: ignore[type-arg]
    try:
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=250)
            for messages in batch.values():
                found.extend(messages)
            if len(found) >= expected:
                break
    finally:
        await consumer.stop()
    return found
