"""reconcile against the real stack: events that never reached the index are found by
comparing the bucket with it, and ``--repair`` makes the index equal to the bucket.

The lost events are made for real: the bucket's notification configuration is removed
while objects are written, deleted and overwritten (MinIO then publishes nothing), and put
back afterwards — as an operator's mistake or a removed target would do.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.commonconfig import ENABLED
from minio.versioningconfig import VersioningConfig

from consumer.events import RECONCILE_FOUND, EventKind, parse_message
from consumer.index import ObjectQuery, open_index
from consumer.indexer import Indexer
from consumer.repair.compare import normalise_etag, sequencer_at
from consumer.setup.notify_config import load_notify_config
from consumer.setup.provisioning import ensure_notifications
from tests.conftest import REPO_ROOT, Backend, StackEndpoints, unique_name
from tests.helpers import Published, bucket_listing, read_bucket_events, topic_end_offsets
from tests.index.factories import event
from tests.integration.test_cli_e2e import cli_env, run_cli

pytestmark = pytest.mark.integration

BEFORE = {
    "user_1/kept.ogg": b"kept, untouched",
    "user_1/deleted while unwatched.ogg": b"this one goes",
    "user_2/overwritten.ogg": b"first content",
}


async def _indexed(url: str, bucket: str) -> set[tuple[str, str, int, str]]:
    async with open_index(url) as store:
        rows = await store.list_objects(ObjectQuery(bucket=bucket))
    return {(r.key, r.version_id, r.size or 0, r.etag or "") for r in rows}


async def _index_topic(stack: StackEndpoints, url: str) -> Any:
    settings = stack.settings(INDEX_URL=url)
    async with open_index(url) as store:
        return await asyncio.wait_for(
            Indexer(settings, store, group_id=unique_name("g")).run(burst=True), timeout=120
        )


def _json_lines(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


class Unwatched:
    """The bucket's notifications removed for the duration (no events at all)."""

    def __init__(self, minio: Minio, stack: StackEndpoints, bucket: str) -> None:
        self._minio, self._bucket = minio, bucket
        settings = stack.settings()
        self._notify = load_notify_config(REPO_ROOT / "minio-notify.json", settings)
        self._rules = self._notify.for_bucket(settings.minio_audio_bucket_name)

    def __enter__(self) -> None:
        self._minio.delete_bucket_notification(self._bucket)

    def __exit__(self, *_: object) -> None:
        ensure_notifications(self._minio, self._bucket, self._rules, self._notify.target.arn)


def _put(minio: Minio, bucket: str, key: str, body: bytes, **kwargs: Any) -> None:
    minio.put_object(bucket, key, io.BytesIO(body), len(body), **kwargs)


async def test_reconcile_reports_and_repairs_lost_events(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    backend: Backend,
    tmp_path: Path,
) -> None:
    bucket = make_bucket("recon")
    published = Published(stack)
    await published.mark()
    for key, body in BEFORE.items():
        _put(minio, bucket, key, body, content_type="audio/ogg")
    await published.wait(bucket, len(BEFORE))
    await _index_topic(stack, backend.url)
    assert await _indexed(backend.url, bucket) == bucket_listing(minio, bucket)

    with Unwatched(minio, stack, bucket):
        meta = {"user-id": "33", "session-type": "interview"}
        _put(minio, bucket, "user_3/new while unwatched.ogg", b"new audio", metadata=meta)
        _put(minio, bucket, "notes/new plain+key.txt", b"text", content_type="text/plain")
        minio.remove_object(bucket, "user_1/deleted while unwatched.ogg")
        _put(minio, bucket, "user_2/overwritten.ogg", b"second, longer content")
    listing = bucket_listing(minio, bucket)
    etag = {key: tag for key, _, _, tag in listing}

    env = cli_env(stack, tmp_path, unique_name("g"))
    env["INDEX_URL"] = backend.url
    report = _json_lines(run_cli(env, "reconcile", "--bucket", bucket, "--json"))
    assert sorted((r["kind"], r["key"]) for r in report) == [
        ("extra", "user_1/deleted while unwatched.ogg"),
        ("missing", "notes/new plain+key.txt"),
        ("missing", "user_3/new while unwatched.ogg"),
        ("stale", "user_2/overwritten.ogg"),
    ]
    stale = next(r for r in report if r["kind"] == "stale")
    assert stale == {
        "kind": "stale", "bucket": bucket, "key": "user_2/overwritten.ogg", "version_id": "",
        "bucket_size": 22, "bucket_etag": etag["user_2/overwritten.ogg"],
        "index_size": 13, "index_etag": stale["index_etag"],
    }  # fmt: skip
    assert stale["index_etag"] != stale["bucket_etag"]
    extra = next(r for r in report if r["kind"] == "extra")
    assert (extra["bucket_size"], extra["index_size"]) == (None, 13)
    # Reporting changed nothing.
    assert await _indexed(backend.url, bucket) != listing

    start = await topic_end_offsets(stack.values["KAFKA_BOOTSTRAP_SERVERS"], stack.events_topic)
    repaired = run_cli(env, "reconcile", "--bucket", bucket, "--repair", "--json")
    outcomes = {r["key"]: r["repair"] for r in _json_lines(repaired)}
    assert outcomes == {
        "user_1/deleted while unwatched.ogg": "tombstoned",
        "notes/new plain+key.txt": "reindexed",
        "user_3/new while unwatched.ogg": "reindexed",
        "user_2/overwritten.ogg": "reindexed",
    }
    assert "journaled=4" in repaired.stderr
    assert "objects_changed=4" in repaired.stderr

    assert _json_lines(run_cli(env, "reconcile", "--bucket", bucket, "--json")) == []
    assert await _indexed(backend.url, bucket) == listing
    async with open_index(backend.url) as store:
        new = await store.get_object(bucket, "user_3/new while unwatched.ogg")
        journal = await store.journal(bucket=bucket, kinds={EventKind.RECONCILED})
    assert new is not None
    assert (new.user_id, new.metadata) == ("33", {"user-id": "33", "session-type": "interview"})
    assert len(journal) == 4
    assert {j.kafka.topic.split(":")[0] for j in journal if j.kafka} == {"reconcile"}

    # The found objects were queued for processing as MinIO-shaped events; the indexer
    # reads them as duplicates of the journaled repairs and changes nothing.
    queued = await read_bucket_events(
        stack.values["KAFKA_BOOTSTRAP_SERVERS"], stack.events_topic, bucket, start, 3
    )
    assert {r.value["EventName"] for r in queued} == {RECONCILE_FOUND}
    assert sorted(parse_message(json.dumps(r.value).encode())[0].key for r in queued) == [
        "notes/new plain+key.txt",
        "user_2/overwritten.ogg",
        "user_3/new while unwatched.ogg",
    ]
    stats = await _index_topic(stack, backend.url)
    assert stats.duplicates >= 3
    assert await _indexed(backend.url, bucket) == listing


async def test_reconcile_restores_an_object_whose_delete_minio_undid(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    backend: Backend,
    tmp_path: Path,
) -> None:
    """The index holds an object's removal, newer than the object's Last-Modified, yet the
    bucket has the object: what a distributed MinIO left when a node that missed an
    acknowledged (and published) delete came back. The bucket is the truth: the repair
    wins over the removal, and a second run finds nothing."""
    bucket = make_bucket("undone")
    key = "user_4/came back.ogg"
    with Unwatched(minio, stack, bucket):  # the events below are the test's, not MinIO's
        _put(minio, bucket, key, b"recorded once", content_type="audio/ogg")
    stat = minio.stat_object(bucket, key)
    assert stat.last_modified is not None
    written = stat.last_modified.astimezone(UTC)
    written_ns = int(sequencer_at(written), 16)
    etag = normalise_etag(stat.etag)
    created = event(
        seq=written_ns, bucket=bucket, key=key, at=written, size=13, etag=etag, user_id="4"
    )
    removed_at = written + timedelta(seconds=1)
    removal = event(
        EventKind.REMOVED, seq=written_ns + 10**9, bucket=bucket, key=key, at=removed_at
    )
    async with open_index(backend.url) as store:
        await store.apply_batch([(created, None), (removal, None)])
        tombstone = await store.get_object(bucket, key)
    assert tombstone is not None
    assert tombstone.deleted

    env = cli_env(stack, tmp_path, unique_name("g"))
    env["INDEX_URL"] = backend.url
    (found,) = _json_lines(run_cli(env, "reconcile", "--bucket", bucket, "--json"))
    assert (found["kind"], found["key"], found["index_size"]) == ("missing", key, None)
    assert found["index_removed_at"] == removed_at.isoformat()

    repaired = run_cli(env, "reconcile", "--bucket", bucket, "--repair", "--json")
    (line,) = _json_lines(repaired)
    assert line["repair"] == "reindexed", line
    assert "objects_changed=1" in repaired.stderr
    assert "superseded=0" in repaired.stderr
    assert await _indexed(backend.url, bucket) == bucket_listing(minio, bucket)
    async with open_index(backend.url) as store:
        journal = await store.journal(bucket=bucket, key=key, kinds={EventKind.RECONCILED})
    (entry,) = journal
    assert entry.event_name == RECONCILE_FOUND
    assert int(entry.sequencer, 16) > written_ns + 10**9  # past the removal
    assert _json_lines(run_cli(env, "reconcile", "--bucket", bucket, "--json")) == []


async def test_reconcile_versioned_bucket_compares_versions(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("reconv")
    minio.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    published = Published(stack)
    await published.mark()
    _put(minio, bucket, "a.ogg", b"v1")
    _put(minio, bucket, "b.ogg", b"b1")
    await published.wait(bucket, 2)
    await _index_topic(stack, url)
    b1 = next(v for k, v, *_ in bucket_listing(minio, bucket, versions=True) if k == "b.ogg")

    with Unwatched(minio, stack, bucket):
        _put(minio, bucket, "a.ogg", b"v2, a new version")
        minio.remove_object(bucket, "b.ogg", version_id=b1)  # the version itself goes

    env = cli_env(stack, tmp_path, unique_name("g"))
    report = _json_lines(run_cli(env, "reconcile", "--bucket", bucket, "--json"))
    assert sorted((r["kind"], r["key"], r["version_id"] == b1) for r in report) == [
        ("extra", "b.ogg", True),
        ("missing", "a.ogg", False),
    ]
    _json_lines(run_cli(env, "reconcile", "--bucket", bucket, "--repair", "--json"))
    assert _json_lines(run_cli(env, "reconcile", "--bucket", bucket, "--json")) == []
    assert await _indexed(url, bucket) == bucket_listing(minio, bucket, versions=True)


def test_reconcile_unknown_bucket_is_bad_input(stack: StackEndpoints, tmp_path: Path) -> None:
    env = cli_env(stack, tmp_path, unique_name("g"))
    result = run_cli(env, "reconcile", "--bucket", unique_name("nosuch"))
    assert result.returncode == 2
    assert result.stderr.startswith("consumer: error: no bucket named")
    assert len(result.stderr.splitlines()) == 1
