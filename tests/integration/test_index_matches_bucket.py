"""The index equals the bucket: multipart upload, server-side copy, overwrite, delete, and a
versioned bucket with delete markers, compared with MinIO's own listing."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

import pytest
from minio import Minio
from minio.commonconfig import ENABLED, CopySource
from minio.versioningconfig import VersioningConfig

from consumer.index import open_index
from consumer.indexer import Indexer
from tests.conftest import Backend, StackEndpoints, unique_name
from tests.helpers import read_bucket_events, topic_end_offsets

pytestmark = pytest.mark.integration

PART = 5 * 1024 * 1024  # S3's smallest multipart part


def _listing(minio: Minio, bucket: str, *, versions: bool) -> set[tuple[str, str, int, str]]:
    """(key, version id, size, etag) of every live object (latest non-delete-marker when
    ``versions`` is false; every non-delete-marker version otherwise)."""
    found = set()
    for obj in minio.list_objects(bucket, recursive=True, include_version=versions):
        if obj.is_delete_marker:
            continue
        version = (obj.version_id or "") if versions else ""
        found.add((obj.object_name or "", version, obj.size or 0, (obj.etag or "").strip('"')))
    return found


async def _index_bucket(
    stack: StackEndpoints, backend: Backend, bucket: str, start: dict[int, int], expected: int
) -> set[tuple[str, str, int, str]]:
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    events = await read_bucket_events(bootstrap, stack.events_topic, bucket, start, expected)
    assert len(events) == expected, [r.value["EventName"] for r in events]
    settings = stack.settings(INDEX_URL=backend.url)
    async with open_index(settings.index_url) as store:
        await asyncio.wait_for(
            Indexer(settings, store, group_id=unique_name("g")).run(burst=True), timeout=60
        )
        rows = await store.list_objects(bucket=bucket)
    return {(r.key, r.version_id, r.size or 0, r.etag or "") for r in rows}


async def test_multipart_copy_overwrite_delete_match_the_listing(
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
    assert indexed == _listing(minio, bucket, versions=False)
    multipart_etag = next(etag for key, _, _, etag in indexed if key.endswith(".wav"))
    assert multipart_etag.endswith("-3"), "a multipart upload's etag counts its parts"


async def test_versioned_bucket_with_delete_markers_matches_the_listing(
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
    assert indexed == _listing(minio, bucket, versions=True)
    assert {key for key, *_ in indexed} == {"a.ogg", "b.ogg"}
    assert len([v for key, v, *_ in indexed if key == "a.ogg"]) == 2
