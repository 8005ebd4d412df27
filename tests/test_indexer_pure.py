"""Pure tests of consumer.indexer: decoding a fetched batch, offsets, DLQ headers, stats.

No broker: batches are built from aiokafka's own ConsumerRecord with payloads shaped like
what MinIO (and plain S3) really publish.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from consumer.events import EventKind
from consumer.index.records import BatchResult, KafkaPosition
from consumer.index.sqlite import _slice_sizes
from consumer.indexer import DecodedBatch, DeferredRecords, IndexerStats, decode_batch
from consumer.kafka.batches import offsets_to_commit
from consumer.kafka.dead_letters import DeadLetter, dead_letter_headers

TOPIC = "minio-events"
BUCKET = "voxpersona-audio"
MAX_BYTES = 1_048_576


def minio_record(
    key: str,
    *,
    bucket: str = BUCKET,
    event_name: str = "s3:ObjectCreated:Put",
    sequencer: str = "1860F1F0A5B2C3D4",
    size: int = 48213,
) -> dict[str, Any]:
    """One S3 event record as MinIO builds it (key URL-encoded like Go's QueryEscape)."""
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-11-21T09:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "1860F1F0A5C0FFEE"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(key, safe=""),
                "size": size,
                "eTag": "5d41402abc4b2a76b9719d911017c592",
                "contentType": "audio/ogg",
                "userMetadata": {"X-Amz-Meta-Session-Type": "interview"},
                "sequencer": sequencer,
            },
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "minio-py/7.2"},
    }


def minio_value(key: str, **kwargs: Any) -> bytes:
    record = minio_record(key, **kwargs)
    bucket = record["s3"]["bucket"]["name"]
    envelope = {"EventName": record["eventName"], "Key": f"{bucket}/{key}", "Records": [record]}
    return json.dumps(envelope).encode()


def consumer_record(
    value: bytes | None,
    *,
    topic: str = TOPIC,
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = b"voxpersona-audio/k",
    timestamp: int = 1_790_000_000_000,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key) if key is not None else -1,
        serialized_value_size=len(value) if value is not None else -1,
        headers=[],
    )


def batch_of(
    *records: ConsumerRecord[bytes, bytes],
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
    for record in records:
        batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return batch


class TestDecodeBatch:
    def test_each_event_carries_its_kafka_position(self) -> None:
        batch = batch_of(
            consumer_record(minio_value("user_1/голос 1.ogg"), partition=2, offset=40),
            consumer_record(minio_value("user_1/second.ogg"), partition=2, offset=41),
        )
        decoded = decode_batch(batch, max_message_bytes=MAX_BYTES)
        assert decoded.dead_letters == []
        assert [(e.key, p) for e, p in decoded.events] == [
            ("user_1/голос 1.ogg", KafkaPosition(TOPIC, 2, 40)),
            ("user_1/second.ogg", KafkaPosition(TOPIC, 2, 41)),
        ]
        event = decoded.events[0][0]
        assert event.bucket == BUCKET
        assert event.kind is EventKind.CREATED
        assert event.user_id == "1"
        assert event.user_metadata == {"session-type": "interview"}

    def test_poison_messages_become_dead_letters_and_valid_ones_still_decode(self) -> None:
        poison = {
            "not_json": consumer_record(b"this is not json", offset=0),
            "not_utf8": consumer_record(b"\xff\xfe\x00binary\x80", offset=1),
            "empty": consumer_record(None, offset=2),
            "wrong_schema": consumer_record(
                json.dumps({"Records": [{"eventName": "s3:ObjectCreated:Put"}]}).encode(),
                offset=3,
            ),
        }
        good = consumer_record(minio_value("ok.ogg"), offset=4)
        decoded = decode_batch(batch_of(*poison.values(), good), max_message_bytes=MAX_BYTES)

        assert [p for _, p in decoded.events] == [KafkaPosition(TOPIC, 0, 4)]
        assert [letter.error_class for letter in decoded.dead_letters] == list(poison)
        for letter, record in zip(decoded.dead_letters, poison.values(), strict=True):
            assert letter.record is record  # the original message, for the DLQ
            assert letter.reason
            assert "\n" not in letter.reason

    def test_oversized_message_is_dead_lettered(self) -> None:
        value = minio_value("big.ogg")
        decoded = decode_batch(batch_of(consumer_record(value)), max_message_bytes=len(value) - 1)
        assert decoded.events == []
        [letter] = decoded.dead_letters
        assert letter.error_class == "oversized"
        assert str(len(value)) in letter.reason

    def test_order_is_topic_then_partition_then_offset(self) -> None:
        # Dict order deliberately scrambled: the batch's own order must not matter.
        batch = {
            TopicPartition("b-topic", 0): [
                consumer_record(minio_value("b0"), topic="b-topic", partition=0, offset=7)
            ],
            TopicPartition(TOPIC, 3): [
                consumer_record(minio_value("m3-a"), partition=3, offset=1),
                consumer_record(minio_value("m3-b"), partition=3, offset=2),
            ],
            TopicPartition(TOPIC, 1): [
                consumer_record(minio_value("m1-a"), partition=1, offset=10),
                consumer_record(b"poison", partition=1, offset=11),
                consumer_record(minio_value("m1-c"), partition=1, offset=12),
            ],
            TopicPartition("a-topic", 2): [
                consumer_record(minio_value("a2"), topic="a-topic", partition=2, offset=5)
            ],
        }
        decoded = decode_batch(batch, max_message_bytes=MAX_BYTES)
        assert [(p.topic, p.partition, p.offset) for _, p in decoded.events] == [
            ("a-topic", 2, 5),
            ("b-topic", 0, 7),
            (TOPIC, 1, 10),
            (TOPIC, 1, 12),
            (TOPIC, 3, 1),
            (TOPIC, 3, 2),
        ]
        assert [e.key for e, _ in decoded.events] == ["a2", "b0", "m1-a", "m1-c", "m3-a", "m3-b"]
        assert [(d.record.partition, d.record.offset) for d in decoded.dead_letters] == [(1, 11)]

    def test_plain_s3_message_with_two_records_gives_two_events_at_one_position(self) -> None:
        value = json.dumps(
            {
                "Records": [
                    minio_record("uploads/first file.wav", sequencer="0055AED6DCD90281E5"),
                    minio_record("uploads/second.wav", sequencer="0055AED6DCD90281E6"),
                ]
            }
        ).encode()
        decoded = decode_batch(
            batch_of(consumer_record(value, partition=1, offset=99)), max_message_bytes=MAX_BYTES
        )
        assert decoded.dead_letters == []
        assert [e.key for e, _ in decoded.events] == [
            "uploads/first file.wav",
            "uploads/second.wav",
        ]
        assert {p for _, p in decoded.events} == {KafkaPosition(TOPIC, 1, 99)}

    def test_empty_batch_decodes_to_nothing(self) -> None:
        assert decode_batch({}, max_message_bytes=MAX_BYTES) == DecodedBatch([], [])


class TestOffsetsToCommit:
    def test_one_past_the_last_offset_per_partition(self) -> None:
        batch = batch_of(
            consumer_record(b"x", partition=0, offset=3),
            consumer_record(b"x", partition=0, offset=4),
            consumer_record(b"x", partition=2, offset=0),
        )
        assert offsets_to_commit(batch) == {
            TopicPartition(TOPIC, 0): 5,
            TopicPartition(TOPIC, 2): 1,
        }

    def test_partitions_without_records_are_skipped(self) -> None:
        batch = {
            TopicPartition(TOPIC, 0): [],
            TopicPartition(TOPIC, 1): [consumer_record(b"x", partition=1, offset=41)],
        }
        assert offsets_to_commit(batch) == {TopicPartition(TOPIC, 1): 42}
        assert offsets_to_commit({TopicPartition(TOPIC, 0): []}) == {}


class TestDeadLetterHeaders:
    NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)

    def _headers(self, reason: str = "invalid JSON: Expecting value") -> list[tuple[str, bytes]]:
        record = consumer_record(b"oops", partition=3, offset=17, timestamp=1_790_000_000_123)
        letter = DeadLetter(record, "not_json", reason)
        return dead_letter_headers(letter, group_id="indexer", now=self.NOW)

    def test_every_header_is_present_with_bytes_values(self) -> None:
        headers = self._headers()
        assert all(isinstance(name, str) for name, _ in headers)
        assert all(isinstance(value, bytes) for _, value in headers)
        assert dict(headers) == {
            "x-error-class": b"not_json",
            "x-error-reason": b"invalid JSON: Expecting value",
            "x-original-topic": TOPIC.encode(),
            "x-original-partition": b"3",
            "x-original-offset": b"17",
            "x-original-timestamp-ms": b"1790000000123",
            "x-consumer-group": b"indexer",
            "x-failed-at": self.NOW.isoformat().encode(),
        }
        assert len(headers) == len(dict(headers)), "a header name is repeated"

    def test_reason_is_truncated_to_1000_bytes(self) -> None:
        reason = dict(self._headers("r" * 5000))["x-error-reason"]
        assert reason == b"r" * 1000

    def test_short_reason_is_kept_whole(self) -> None:
        assert dict(self._headers("r" * 1000))["x-error-reason"] == b"r" * 1000


class TestIndexerStats:
    def test_add_accumulates_counts_and_kinds(self) -> None:
        created = decode_batch(
            batch_of(
                consumer_record(minio_value("a"), offset=0),
                consumer_record(minio_value("b"), offset=1),
                consumer_record(b"poison", offset=2),
            ),
            max_message_bytes=MAX_BYTES,
        )
        removed = decode_batch(
            batch_of(
                consumer_record(minio_value("a", event_name="s3:ObjectRemoved:Delete"), offset=3)
            ),
            max_message_bytes=MAX_BYTES,
        )
        stats = IndexerStats()
        stats.add(created, BatchResult(2, 0, 2, 0), elapsed_s=0.25)
        stats.add(removed, BatchResult(0, 1, 0, 1), elapsed_s=0.5)

        assert stats.events == 3
        assert stats.journaled == 2
        assert stats.duplicates == 1
        assert stats.objects_changed == 2
        assert stats.stale_ignored == 1
        assert stats.last_batch_s == 0.5
        assert stats.events_by_kind == {"created": 2, "removed": 1}
        # Batches, messages, dead letters and pauses are the loop's to count, not add()'s.
        assert (stats.batches, stats.messages, stats.dead_lettered, stats.fetch_pauses) == (
            0,
            0,
            0,
            0,
        )


def test_dead_letter_reason_is_cut_on_a_character_boundary() -> None:
    record = ConsumerRecord(
        topic="t",
        partition=0,
        offset=1,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"x",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=1,
        headers=(),
    )
    letter = DeadLetter(record, "wrong_schema", "я" * 700)  # 1400 bytes of 2-byte characters
    headers = dict(dead_letter_headers(letter, group_id="g", now=datetime.now(UTC)))
    reason = headers["x-error-reason"]
    assert len(reason) <= 1000
    assert reason.decode("utf-8") == "я" * (len(reason) // 2)


def test_sqlite_slices_are_full_then_powers_of_two() -> None:
    assert _slice_sizes(2000, 512) == [512, 512, 512, 256, 128, 64, 16]
    assert _slice_sizes(1000, 999 // 18) == [32] * 31 + [8]  # SQLite < 3.32: 999 parameters
    assert _slice_sizes(7, 512) == [4, 2, 1]
    assert _slice_sizes(0, 512) == []
    for count in range(0, 1100, 7):
        assert sum(_slice_sizes(count, 512)) == count


def _slices(made: list[tuple[int, int]], batch: int, count: int = 3) -> Iterator[None]:
    for part in range(count):
        made.append((batch, part))
        yield


async def _turns(count: int = 20) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_deferred_records_wait_while_held_off_then_run_in_order() -> None:
    made: list[tuple[int, int]] = []
    records = DeferredRecords()
    with records.held_off():  # the next batch being decoded
        records.record(_slices(made, 1))
        records.record(_slices(made, 2))
        await _turns()
        assert made == []
    await records.flush()
    assert made == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]


async def test_deferred_records_stop_between_slices_while_held_off() -> None:
    made: list[tuple[int, int]] = []
    records = DeferredRecords()
    records.record(_slices(made, 1, count=50))
    await asyncio.sleep(0)
    with records.held_off():
        started = len(made)
        await _turns()
        assert 0 < started == len(made) < 50  # at most the slice under way finished
    await records.flush()
    assert made == [(1, part) for part in range(50)]
