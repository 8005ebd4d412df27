"""The index equals the bucket: uploads with the minio SDK and with boto3 (plain, multipart,
presigned PUT), server-side copy, overwrite, tagging, delete, and a versioned bucket with
delete markers, compared with MinIO's own listing; the journal holds every event once."""

from __future__ import annotations

import asyncio
import io
import urllib.request
from collections.abc import Callable
from datetime import timedelta

import boto3
import pytest
from botocore.config import Config
from minio import Minio
from minio.commonconfig import ENABLED, CopySource
from minio.versioningconfig import VersioningConfig

from consumer.index import ObjectQuery, open_index
from consumer.index.records import JournalRecord
from consumer.indexer import Indexer
from tests.conftest import Backend, StackEndpoints, unique_name
from tests.helpers import bucket_listing, read_bucket_events, topic_end_offsets

pytestmark = pytest.mark.integration

PART = 5 * 1024 * 1024  # S3's smallest multipart part


async def _index_bucket(
    stack: StackEndpoints, backend: Backend, bucket: str, start: dict[int, int], expected: int
) -> set[tuple[str, str, int, str]]:
    """Index the events topic once (after ``expected`` events about ``bucket`` arrived);
    the bucket's live rows as (key, version id, size, etag). Also checks that the journal
    holds each of those events exactly once."""
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    events = await read_bucket_events(bootstrap, stack.events_topic, bucket, start, expected)
    assert len(events) == expected, [r.value["EventName"] for r in events]
    settings = stack.settings(INDEX_URL=backend.url)
    async with open_index(settings.index_url) as store:
        await asyncio.wait_for(
            Indexer(settings, store, group_id=unique_name("g")).run(burst=True), timeout=60
        )
        rows = await store.list_objects(ObjectQuery(bucket=bucket))
        journal = await store.journal(bucket=bucket, limit=1000)
    _assert_journaled_once(journal, [(r.partition, r.offset) for r in events])
    return {(r.key, r.version_id, r.size or 0, r.etag or "") for r in rows}


def _assert_journaled_once(journal: list[JournalRecord], positions: list[tuple[int, int]]) -> None:
    """One journal row per published event, at that event's Kafka position."""
    journaled = sorted((j.kafka.partition, j.kafka.offset) for j in journal if j.kafka)
    assert journaled == sorted(positions)


async def test_multipart_copy_overwrite_delete_match_thebucket_listing(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], backend: Backend
) -> None:
    bucket = make_bucket("match")
    start = await topic_end_offsets(stack.values["KAFKA_BOOTSTRAP_SERVERS"], stack.events_topic)
    big = b"m" * (2 * PART + 123)
    minio.put_object(
        bucket,
        "user_3/long recording.wav",
        io.BytesIO(big),
        len(big),
        part_size=PART,
        content_type="audio/wav",
    )
    minio.put_object(bucket, "user_3/short.ogg", io.BytesIO(b"short"), 5)
    minio.copy_object(bucket, "user_4/copy of short.ogg", CopySource(bucket, "user_3/short.ogg"))
    minio.put_object(bucket, "user_3/short.ogg", io.BytesIO(b"short, again"), 12)
    minio.put_object(bucket, "tmp/gone.ogg", io.BytesIO(b"gone"), 4)
    minio.remove_object(bucket, "tmp/gone.ogg")

    indexed = await _index_bucket(stack, backend, bucket, start, 6)
    assert indexed == bucket_listing(minio, bucket, versions=False)
    multipart_etag = next(etag for key, _, _, etag in indexed if key.endswith(".wav"))
    assert multipart_etag.endswith("-3"), "a multipart upload's etag counts its parts"


async def test_versioned_bucket_with_delete_markers_matches_thebucket_listing(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], backend: Backend
) -> None:
    bucket = make_bucket("versions")
    minio.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    start = await topic_end_offsets(stack.values["KAFKA_BOOTSTRAP_SERVERS"], stack.events_topic)
    minio.put_object(bucket, "a.ogg", io.BytesIO(b"v1"), 2)
    minio.put_object(bucket, "a.ogg", io.BytesIO(b"v2 longer"), 9)
    minio.put_object(bucket, "b.ogg", io.BytesIO(b"b"), 1)
    minio.remove_object(bucket, "b.ogg")  # a delete marker hides b; its version remains

    indexed = await _index_bucket(stack, backend, bucket, start, 4)
    # Every stored version is in the index (the inventory is per version), including the
    # one hidden behind b's delete marker; the marker itself is a tombstone, not listed.
    assert indexed == bucket_listing(minio, bucket, versions=True)
    assert {key for key, *_ in indexed} == {"a.ogg", "b.ogg"}
    assert len([v for key, v, *_ in indexed if key == "a.ogg"]) == 2


async def test_boto3_plain_multipart_and_presigned_uploads_match_thebucket_listing(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], backend: Backend
) -> None:
    """What other S3 clients do: boto3 put (with user metadata), boto3's managed multipart
    upload, a presigned PUT from boto3 and one from the minio SDK (the bot's path), a
    copy with replaced metadata, a tagging change and a delete."""
    bucket = make_bucket("boto")
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{stack.values['MINIO_ENDPOINT']}",
        aws_access_key_id=stack.values["MINIO_ACCESS_KEY"],
        aws_secret_access_key=stack.values["MINIO_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    start = await topic_end_offsets(stack.values["KAFKA_BOOTSTRAP_SERVERS"], stack.events_topic)
    s3.put_object(
        Bucket=bucket,
        Key="inbox/voice note 1.ogg",
        Body=b"ogg bytes",
        ContentType="audio/ogg",
        Metadata={"user-id": "42", "source": "boto3"},
    )
    big = io.BytesIO(b"w" * (2 * PART + 7))
    s3.upload_fileobj(
        big,
        bucket,
        "user_42/long talk.wav",
        Config=boto3.s3.transfer.TransferConfig(
            multipart_threshold=PART, multipart_chunksize=PART, use_threads=False
        ),
    )
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "user_43/presigned by boto3.ogg"}
    )
    _http_put(url, b"presigned boto3")
    _http_put(
        minio.presigned_put_object(bucket, "user_44/голос.ogg", expires=timedelta(minutes=5)),
        b"presigned minio",
    )
    s3.copy_object(
        Bucket=bucket,
        Key="user_45/copy.ogg",
        CopySource={"Bucket": bucket, "Key": "inbox/voice note 1.ogg"},
        MetadataDirective="REPLACE",
        Metadata={"user-id": "45"},
        ContentType="audio/ogg",
    )
    s3.put_object_tagging(
        Bucket=bucket,
        Key="user_43/presigned by boto3.ogg",
        Tagging={"TagSet": [{"Key": "reviewed", "Value": "yes"}]},
    )
    s3.delete_object(Bucket=bucket, Key="user_42/long talk.wav")

    indexed = await _index_bucket(stack, backend, bucket, start, 7)
    assert indexed == bucket_listing(minio, bucket, versions=False)
    settings = stack.settings(INDEX_URL=backend.url)
    async with open_index(settings.index_url) as store:
        users = {r.key: r.user_id for r in await store.list_objects(ObjectQuery(bucket=bucket))}
        tagged = await store.get_object(bucket, "user_43/presigned by boto3.ogg")
        deleted = await store.get_object(bucket, "user_42/long talk.wav")
    assert users == {
        "inbox/voice note 1.ogg": "42",  # from the user-id metadata
        "user_43/presigned by boto3.ogg": "43",  # from the key prefix
        "user_44/голос.ogg": "44",
        "user_45/copy.ogg": "45",  # the copy's replaced metadata
    }
    assert tagged is not None
    assert tagged.last_event_name == "s3:ObjectCreated:PutTagging"
    assert tagged.size == len(b"presigned boto3")
    assert deleted is not None
    assert deleted.deleted
    assert deleted.etag is not None
    assert deleted.etag.endswith("-3"), "the deleted multipart upload was indexed first"


def _http_put(url: str, body: bytes) -> None:
    """PUT to a presigned URL the way a browser or the bot would: no credentials."""
    request = urllib.request.Request(url, data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
