"""What the bot and a person see, against the real stack on both index backends:
listings that equal S3's in a versioned bucket, the bot's loop from presign to transcript
(through the stand-in transcription API), the async feed of results, and full-text search
of the transcript."""

from __future__ import annotations

import asyncio
import io
import posixpath
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from minio import Minio
from minio.commonconfig import ENABLED
from minio.versioningconfig import VersioningConfig

from consumer.client import NotFound, VoxClient
from consumer.index import open_index
from consumer.indexer import Indexer
from consumer.processing.transcribe import Transcriber
from consumer.processing.worker import ProcessorWorker
from consumer.settings import Settings
from tests import audio
from tests.conftest import Backend, StackEndpoints, unique_name
from tests.helpers import Published, committed_offsets, topic_end_offsets
from tests.integration.test_cli_e2e import cli_env, json_rows, run_cli
from tests.transcription_server import StandIn

pytestmark = pytest.mark.integration

RUSSIAN = "Сегодня мы обсудили бюджет проекта на следующий квартал"


def _put(minio: Minio, bucket: str, key: str, body: bytes) -> str | None:
    return minio.put_object(
        bucket, key, io.BytesIO(body), len(body), content_type="audio/ogg"
    ).version_id


async def _index(settings: Settings) -> None:
    async with open_index(settings.index_url) as store:
        await asyncio.wait_for(Indexer(settings, store).run(burst=True), timeout=120)


async def test_listings_equal_list_objects_v2_and_list_object_versions(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    backend: Backend,
    tmp_path: Path,
) -> None:
    bucket = make_bucket("ver")
    minio.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    published = Published(stack)
    await published.mark()
    _put(minio, bucket, "a.ogg", b"first")
    a_v2 = _put(minio, bucket, "a.ogg", b"second take")  # an overwrite: a second version
    _put(minio, bucket, "gone.ogg", b"hidden")
    minio.remove_object(bucket, "gone.ogg")  # a delete marker hides it
    purged = _put(minio, bucket, "purged.ogg", b"purged")
    minio.remove_object(bucket, "purged.ogg", version_id=purged)  # gone for good
    _put(minio, bucket, "x/y.ogg", b"nested")
    await published.wait(bucket, 7)
    settings = stack.settings(INDEX_URL=backend.url, KAFKA_GROUP_ID=unique_name("ls"))
    await _index(settings)

    current = {
        (o.object_name, o.size, (o.etag or "").strip('"'))
        for o in minio.list_objects(bucket, recursive=True)
    }
    versions = {
        (o.object_name, o.version_id, str(o.is_latest).lower() == "true", o.is_delete_marker)
        for o in minio.list_objects(bucket, recursive=True, include_version=True)
    }
    assert len(current) == 2  # a.ogg, x/y.ogg
    assert len(versions) == 5  # a.ogg ×2, gone.ogg and its marker, x/y.ogg
    async with VoxClient(settings) as client:
        listed = await client.list_objects(bucket=bucket)
        assert {(r.key, r.size, r.etag) for r in listed} == current
        every = await client.list_objects(bucket=bucket, include_versions=True)
        assert {(r.key, r.version_id, r.is_latest, r.is_delete_marker) for r in every} == versions
        # get / wait_indexed / wait_removed see the current version of a versioned key.
        latest = await client.wait_indexed(bucket, "a.ogg", timeout_s=5)
        assert (latest.version_id, latest.size) == (a_v2, len(b"second take"))
        assert (await client.get(bucket, "x/y.ogg")).key == "x/y.ogg"
        with pytest.raises(NotFound):
            await client.get(bucket, "gone.ogg")
        await client.wait_removed(bucket, "gone.ogg", timeout_s=5)
        (usage,) = [row for row in await client.usage(by="bucket") if row.group == bucket]
        assert (usage.objects, usage.bytes) == (2, len(b"second take") + len(b"nested"))
        stored = len(b"first") + len(b"second take") + len(b"hidden") + len(b"nested")
        assert (usage.stored_objects, usage.stored_bytes) == (4, stored)

    env = cli_env(stack, tmp_path, unique_name("cli")) | {"INDEX_URL": backend.url}
    rows = json_rows(run_cli(env, "ls", "--bucket", bucket, "--json"))
    assert sorted(row["key"] for row in rows) == ["a.ogg", "x/y.ogg"]
    assert all(row["is_latest"] and not row["delete_marker"] for row in rows)
    rows = json_rows(run_cli(env, "ls", "--bucket", bucket, "--all-versions", "--json"))
    assert {
        (row["key"], row["version_id"], row["is_latest"], row["delete_marker"]) for row in rows
    } == versions
    plain = run_cli(env, "ls", "--bucket", bucket, "--all-versions")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0].split()[:5] == [
        "BUCKET",
        "KEY",
        "VERSION_ID",
        "IS_LATEST",
        "DELETE_MARKER",
    ]
    (mine,) = [
        row
        for row in json_rows(run_cli(env, "usage", "--by", "bucket", "--json"))
        if row["bucket"] == bucket
    ]
    assert (mine["objects"], mine["stored_objects"], mine["stored_bytes"]) == (2, 4, stored)
    refused = run_cli(env, "ls", "--bucket", "../etc", "--json")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "Traceback" not in refused.stderr


async def test_the_bots_loop_from_presign_to_transcript_and_search(
    stack: StackEndpoints,
    make_bucket: Callable[..., str],
    backend: Backend,
    tmp_path: Path,
) -> None:
    """presign → the device POSTs → indexed → transcribed (stand-in API) → the feed tells
    the bot → wait_processed / result / the CLI give the transcript → search finds it."""
    bucket, results = make_bucket("speech"), make_bucket("res")
    with StandIn() as api:
        settings = stack.settings(
            INDEX_URL=backend.url,
            MINIO_AUDIO_BUCKET_NAME=bucket,
            MINIO_RESULTS_BUCKET_NAME=results,
            KAFKA_GROUP_ID=unique_name("idx"),
            MINIO_RETRY_BACKOFF=0.05,
            TRANSCRIBE_BASE_URL=api.base_url,
        )
        published = Published(stack)
        await published.mark()
        bot_group = unique_name("bot")
        async with (
            VoxClient(settings) as client,
            client.processed(bucket=bucket, group_id=bot_group) as feed,
            httpx.AsyncClient(timeout=30) as http,
        ):
            post = await client.presign_upload("42", "budget-meeting.ogg", session_type="call")
            api.script(posixpath.basename(post.key), [(200, {"text": RUSSIAN, "language": "ru"})])
            voice = audio.encoded("opus", 1.0)
            sent = await http.post(post.url, data=post.fields, files={"file": ("a.ogg", voice)})
            assert sent.status_code == 204, sent.text
            await published.wait(bucket, 1)
            await _index(settings)
            await client.wait_indexed(bucket, post.key, timeout_s=10)

            async with open_index(settings.index_url) as store:
                worker = ProcessorWorker(
                    settings,
                    store,
                    {"transcribe": Transcriber(settings, api.base_url)},
                    group_id=unique_name("proc"),
                )
                await asyncio.wait_for(worker.run(burst=True), timeout=120)

            done = await asyncio.wait_for(anext(feed), timeout=60)
            assert (done.bucket, done.key, done.processor, done.status) == (
                bucket,
                post.key,
                "transcribe",
                "done",
            )
            assert done.text == RUSSIAN

            (outcome,) = await client.wait_processed(bucket, post.key, timeout_s=30)
            assert (outcome.processor, outcome.status, outcome.text) == (
                "transcribe",
                "done",
                RUSSIAN,
            )
            document = await client.result(bucket, post.key, "transcribe")
            assert document["result"]["text"] == RUSSIAN
            assert document["source"]["key"] == post.key

            # The processing worker indexed the transcript once the result was stored.
            (hit,) = await client.search(text="бюджет проекта")
            assert hit.key == post.key
            assert hit.snippet is not None
            assert "[бюджет]" in hit.snippet
            found = await client.search({"session-type": "call"}, text="квартал")
            assert [(r.key, r.snippet and "[квартал]" in r.snippet) for r in found] == [
                (post.key, True)
            ]
            assert await client.search({"session-type": "other"}, text="квартал") == []

    # Closing the feed committed its group's offsets past the result it handed over.
    bootstrap = settings.kafka_bootstrap_servers
    committed = await committed_offsets(bootstrap, bot_group, settings.kafka_events_topic, 4)
    ends = await topic_end_offsets(bootstrap, settings.kafka_events_topic)
    assert committed, "the feed committed nothing"
    assert all(0 < offset <= ends[partition] for partition, offset in committed.items())

    env = cli_env(stack, tmp_path, unique_name("cli")) | {
        "INDEX_URL": backend.url,
        "MINIO_RESULTS_BUCKET_NAME": results,
    }
    rows = json_rows(run_cli(env, "result", f"{bucket}/{post.key}", "--wait", "10s", "--json"))
    assert [(row["processor"], row["status"], row["result"]["text"]) for row in rows] == [
        ("transcribe", "done", RUSSIAN)
    ]
    plain = run_cli(env, "result", f"{bucket}/{post.key}", "--processor", "transcribe")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == f"transcribe   done   {RUSSIAN}\n"
    hits = json_rows(run_cli(env, "search", "--text", "Бюджет", "--bucket", bucket, "--json"))
    assert [row["key"] for row in hits] == [post.key]
    assert "[бюджет]" in hits[0]["snippet"]
    missing = run_cli(env, "result", f"{bucket}/user_42/nothing.ogg")
    assert missing.returncode == 1
    assert "not processed" in missing.stderr
