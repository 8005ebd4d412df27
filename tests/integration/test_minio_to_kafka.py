"""The real pipeline's first leg: objects written to MinIO arrive in Kafka as events.

Every trap of MinIO's events that is visible at this layer is checked against the real
server: key encoding, removal events without metadata, NoOP deletes,
sequencers, and the Kafka message key.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from urllib.parse import unquote_plus

import pytest
from minio import Minio

from tests.conftest import StackEndpoints
from tests.helpers import read_bucket_events, topic_end_offsets

pytestmark = pytest.mark.integration

KEYS = [
    "plain.ogg",
    "with space/and more spaces.ogg",
    "plus+sign/a+b.wav",
    "percent%25/100%.mp3",
    "юникод/голос 1.ogg",
    "user_42/2026/11/21/deep/nested/voice.m4a",
]


def _put(minio: Minio, bucket: str, key: str, body: bytes, **meta: str) -> None:
    minio.put_object(
        bucket, key, io.BytesIO(body), len(body), content_type="audio/ogg", metadata=meta or None
    )


async def test_uploads_overwrite_and_delete_arrive_as_minio_events(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str]
) -> None:
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    bucket = make_bucket("e2e")
    start = await topic_end_offsets(bootstrap, stack.events_topic)
    assert len(start) >= 4, "the events topic must have at least 4 partitions"

    bodies = {key: f"audio bytes of {key}".encode() for key in KEYS}
    for key, body in bodies.items():
        _put(minio, bucket, key, body, **{"user-id": "42", "session-type": "interview"})
    overwritten = KEYS[0]
    _put(minio, bucket, overwritten, b"a longer second version", **{"user-id": "42"})
    deleted = KEYS[1]
    minio.remove_object(bucket, deleted)
    minio.remove_object(bucket, "never-existed.ogg")

    expected = len(KEYS) + 1 + 1 + 1
    records = await read_bucket_events(bootstrap, stack.events_topic, bucket, start, expected)
    assert len(records) == expected, [r.value["EventName"] for r in records]

    by_key: dict[str, list] = {}
    for record in records:
        envelope = record.value
        assert set(envelope) >= {"EventName", "Key", "Records"}
        assert len(envelope["Records"]) == 1
        rec = envelope["Records"][0]
        s3 = rec["s3"]
        assert s3["bucket"]["name"] == bucket
        raw_key = s3["object"]["key"]
        key = unquote_plus(raw_key)
        # The Kafka message key and the envelope's Key are "<bucket>/<key>" unescaped.
        assert record.key == f"{bucket}/{key}".encode()
        assert envelope["Key"] == f"{bucket}/{key}"
        assert rec["eventName"] == envelope["EventName"]
        assert int(s3["object"]["sequencer"], 16) > 0
        by_key.setdefault(key, []).append((record, rec))

    # Go's QueryEscape: "/" is %2F and a space "+", so the raw key is never the real one
    # once it has a slash or a space — decoding is not optional.
    spaced = by_key["with space/and more spaces.ogg"][0][1]["s3"]["object"]["key"]
    assert "%2F" in spaced
    assert "+" in spaced
    assert " " not in spaced
    plus = by_key["plus+sign/a+b.wav"][0][1]["s3"]["object"]["key"]
    assert "%2B" in plus

    for key in KEYS:
        created = [rec for _, rec in by_key[key] if rec["eventName"] == "s3:ObjectCreated:Put"]
        assert created, f"no created event for {key!r}"
        first = created[0]["s3"]["object"]
        body = bodies[key]
        assert first["size"] == len(body)
        assert first["eTag"].strip('"') == hashlib.md5(body).hexdigest()
        assert first["contentType"] == "audio/ogg"
        meta = {k.lower(): v for k, v in first["userMetadata"].items()}
        assert meta["x-amz-meta-user-id"] == "42"
        assert meta["x-amz-meta-session-type"] == "interview"

    # Overwrite: two created events for one key, on one partition, the later one with the
    # larger sequencer and the new size.
    versions = by_key[overwritten]
    assert [rec["eventName"] for _, rec in versions] == ["s3:ObjectCreated:Put"] * 2
    assert len({record.partition for record, _ in versions}) == 1
    first_seq, second_seq = (int(rec["s3"]["object"]["sequencer"], 16) for _, rec in versions)
    assert second_seq > first_seq
    assert versions[1][1]["s3"]["object"]["size"] == len(b"a longer second version")

    # Delete: a removal event without size, eTag, content type or metadata.
    removal = [rec for _, rec in by_key[deleted] if rec["eventName"].startswith("s3:ObjectRemoved")]
    assert [r["eventName"] for r in removal] == ["s3:ObjectRemoved:Delete"]
    removed_object = removal[0]["s3"]["object"]
    for absent in ("size", "eTag", "contentType", "userMetadata"):
        assert not removed_object.get(absent), f"removal event unexpectedly carries {absent}"

    # Deleting what never existed still publishes an event: NoOP (trap 4).
    assert [rec["eventName"] for _, rec in by_key["never-existed.ogg"]] == ["s3:ObjectRemoved:NoOP"]


async def test_bucket_without_notification_publishes_nothing(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str]
) -> None:
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    quiet = make_bucket("quiet", notify_events=False)
    loud = make_bucket("loud")
    start = await topic_end_offsets(bootstrap, stack.events_topic)
    _put(minio, quiet, "a.ogg", b"x")
    _put(minio, loud, "a.ogg", b"x")
    # The loud bucket's event proves delivery works; the quiet one must not appear.
    assert len(await read_bucket_events(bootstrap, stack.events_topic, loud, start, 1)) == 1
    assert await read_bucket_events(bootstrap, stack.events_topic, quiet, start, 1, 3.0) == []
