"""The client side against the real stack: the bot's presigned flow and its limits, uploads
with progress, streams, queries, deletes, and the CLI verbs upload/presign/delete/import."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from minio import Minio

from consumer.client import (
    InvalidInput,
    NotFound,
    SyncVoxClient,
    UploadFailed,
    UploadProgress,
    VoxClient,
)
from consumer.client.importer import parse_manifest
from consumer.index import open_index
from consumer.indexer import Indexer
from consumer.names import decode_metadata_value, import_key
from consumer.settings import Settings
from tests.conftest import REPO_ROOT, StackEndpoints, unique_name
from tests.helpers import read_bucket_events, topic_end_offsets
from tests.integration.test_cli_e2e import cli_env, json_rows, run_cli

if TYPE_CHECKING:
    from infra.stack import Stack

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def audio_bucket(make_bucket: Callable[..., str]) -> str:
    return make_bucket("audio")


@pytest.fixture
def settings(stack: StackEndpoints, audio_bucket: str, tmp_path: Path) -> Settings:
    return stack.settings(
        MINIO_AUDIO_BUCKET_NAME=audio_bucket,
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        KAFKA_GROUP_ID=unique_name("client"),
        MINIO_MAX_FILE_SIZE=200 * 1024 * 1024,
    )


async def index_events(settings: Settings, bucket: str, start: dict[int, int], count: int) -> None:
    """Wait until MinIO published ``count`` events of ``bucket`` after ``start``, then
    index the topic (burst) into the settings' index."""
    found = await read_bucket_events(
        settings.kafka_bootstrap_servers, settings.kafka_events_topic, bucket, start, count
    )
    assert len(found) >= count, [r.value["EventName"] for r in found]
    async with open_index(settings.index_url) as store:
        await asyncio.wait_for(Indexer(settings, store).run(burst=True), timeout=120)


async def offsets(settings: Settings) -> dict[int, int]:
    return await topic_end_offsets(settings.kafka_bootstrap_servers, settings.kafka_events_topic)


async def test_the_bots_presigned_post_flow_and_what_the_policy_refuses(
    stack: StackEndpoints, minio: Minio, audio_bucket: str, tmp_path: Path
) -> None:
    """The bot presigns, the user's device POSTs, the index gets the object with the
    metadata the policy fixed. Every attempt to bend the policy is refused by MinIO and
    writes nothing."""
    settings = stack.settings(
        MINIO_AUDIO_BUCKET_NAME=audio_bucket,
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        KAFKA_GROUP_ID=unique_name("client"),
        MINIO_MAX_FILE_SIZE=4096,
    )
    start = await offsets(settings)
    audio = b"OggS" + bytes(1000)
    async with VoxClient(settings) as client, httpx.AsyncClient(timeout=30) as http:
        post = await client.presign_upload(
            "1001", "Интервью 1.ogg", session_type="interview", traceparent=TRACEPARENT
        )
        assert post.key.startswith("user_1001/")
        assert post.key.endswith("-Интервью 1.ogg")

        async def send(fields: dict[str, str], body: bytes = audio) -> httpx.Response:
            return await http.post(post.url, data=fields, files={"file": ("a.ogg", body)})

        bent = {
            "another user's prefix": {**post.fields, "key": "user_1002/x.ogg"},
            "another key in the own prefix": {**post.fields, "key": "user_1001/other.ogg"},
            "another user id": {**post.fields, "x-amz-meta-user-id": "1002"},
            "another session type": {**post.fields, "x-amz-meta-session-type": "admin"},
            "another content type": {**post.fields, "Content-Type": "text/html"},
            "no user id": {k: v for k, v in post.fields.items() if k != "x-amz-meta-user-id"},
        }
        for attempt, fields in bent.items():
            refused = await send(fields)
            assert refused.status_code == 403, (attempt, refused.status_code, refused.text)
            assert "<Code>AccessDenied</Code>" in refused.text, (attempt, refused.text)
        too_big = await send(post.fields, b"x" * 4097)
        assert too_big.status_code == 400, too_big.text
        assert "EntityTooLarge" in too_big.text
        accepted = await send(post.fields)
        assert accepted.status_code == 204, accepted.text

        listed = [o.object_name for o in minio.list_objects(audio_bucket, recursive=True)]
        assert listed == [post.key], "a refused form wrote something"

        await index_events(settings, audio_bucket, start, 1)
        record = await client.wait_indexed(audio_bucket, post.key, timeout_s=10)
        assert record.user_id == "1001"
        assert record.size == len(audio)
        assert record.content_type == "audio/ogg"
        assert record.metadata["session-type"] == "interview"
        assert record.metadata["traceparent"] == TRACEPARENT
        assert decode_metadata_value(record.metadata["original-name"]) == "Интервью 1.ogg"


async def test_presigned_put_needs_exactly_the_signed_headers(
    settings: Settings, minio: Minio, audio_bucket: str
) -> None:
    async with VoxClient(settings) as client, httpx.AsyncClient(timeout=30) as http:
        put = await client.presign_put("77", "memo.m4a", session_type="memo")
        assert put.headers["Content-Type"] == "audio/mp4"
        assert put.headers["x-amz-meta-user-id"] == "77"
        attempts = {
            "another user id": {**put.headers, "x-amz-meta-user-id": "78"},
            "no metadata": {"Content-Type": put.headers["Content-Type"]},
            "another content type": {**put.headers, "Content-Type": "text/html"},
        }
        for attempt, headers in attempts.items():
            refused = await http.put(put.url, headers=headers, content=b"audio")
            # 403 SignatureDoesNotMatch, or 400 AccessDenied when a signed header is missing
            assert refused.status_code in (400, 403), (attempt, refused.text)
            assert "SignatureDoesNotMatch" in refused.text or "AccessDenied" in refused.text
        other_key = put.url.replace(put.key.split("/")[-1].replace(" ", "%20"), "other.m4a")
        refused = await http.put(other_key, headers=put.headers, content=b"audio")
        assert refused.status_code == 403, refused.text
        accepted = await http.put(put.url, headers=put.headers, content=b"audio bytes")
        assert accepted.status_code == 200, accepted.text
    stat = minio.stat_object(audio_bucket, put.key)
    assert stat.size == len(b"audio bytes")
    assert stat.metadata["x-amz-meta-user-id"] == "77"
    assert stat.metadata["x-amz-meta-session-type"] == "memo"
    assert [o.object_name for o in minio.list_objects(audio_bucket, recursive=True)] == [put.key]


async def test_a_100_mb_multipart_upload_with_progress_then_stream_query_and_delete(
    settings: Settings, minio: Minio, audio_bucket: str, tmp_path: Path
) -> None:
    big = tmp_path / "long interview.wav"
    with big.open("wb") as handle:
        for _ in range(100):
            handle.write(os.urandom(1024 * 1024))
    small = tmp_path / "note.ogg"
    small.write_bytes(b"OggS small note")
    start = await offsets(settings)
    seen: list[UploadProgress] = []
    speaker, writer = unique_name("speaker"), unique_name("writer")  # the index is shared
    async with VoxClient(settings) as client:
        result = await client.upload(
            big, speaker, session_type="interview", metadata={"lang": "ru"}, progress=seen.append
        )
        other = await client.upload(small, writer, session_type="note")

        assert result.multipart  # 100 MiB in 8 MiB parts
        assert result.etag.endswith("-13")
        assert result.size == 100 * 1024 * 1024
        sent = [p.bytes_sent for p in seen]
        assert len(sent) > 10
        assert sent == sorted(sent), "progress went backwards"
        assert sent[-1] == result.size
        stat = minio.stat_object(audio_bucket, result.key)
        assert stat.size == result.size
        assert stat.metadata["x-amz-meta-sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()

        streamed = hashlib.sha256()
        async for chunk in client.stream(audio_bucket, result.key):
            streamed.update(chunk)
        assert streamed.hexdigest() == result.sha256
        copy = await client.download(audio_bucket, result.key, tmp_path / "copy.wav")
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == result.sha256
        with pytest.raises(NotFound):
            async for _ in client.stream(audio_bucket, f"user_{speaker}/missing.wav"):
                pass

        await index_events(settings, audio_bucket, start, 2)
        record = await client.wait_indexed(audio_bucket, result.key, etag=result.etag)
        assert record.user_id == speaker
        assert record.metadata["lang"] == "ru"
        assert [r.key for r in await client.list_objects(user_id=speaker)] == [result.key]
        found = await client.search({"session-type": "note"}, bucket=audio_bucket)
        assert [r.key for r in found] == [other.key]
        usage = {row.group: (row.objects, row.bytes) for row in await client.usage(by="user")}
        assert usage[speaker] == (1, result.size)
        assert usage[writer] == (1, small.stat().st_size)
        per_bucket = {
            row.group: (row.objects, row.bytes) for row in await client.usage(by="bucket")
        }
        assert per_bucket[audio_bucket] == (2, result.size + small.stat().st_size)

        start = await offsets(settings)
        deleted = await client.delete(
            audio_bucket, [result.key, other.key, f"user_{speaker}/never.wav"]
        )
        assert [d.outcome for d in deleted] == ["deleted", "deleted", "absent"]
        await index_events(settings, audio_bucket, start, 2)
        await client.wait_removed(audio_bucket, result.key, timeout_s=10)
        with pytest.raises(NotFound):
            await client.get(audio_bucket, other.key)
        limited = VoxClient(settings.model_copy(update={"minio_max_file_size": 10}))
        with pytest.raises(InvalidInput, match="over MINIO_MAX_FILE_SIZE"):
            await limited.upload(small, writer)
    assert list(minio.list_objects(audio_bucket, recursive=True)) == []


def test_the_sync_client_for_scripts(settings: Settings, audio_bucket: str, tmp_path: Path) -> None:
    path = tmp_path / "script.ogg"
    path.write_bytes(b"OggS from a script")
    with SyncVoxClient(settings) as client:
        result = client.upload(path, "8")
        assert b"".join(client.stream(audio_bucket, result.key)) == path.read_bytes()
        url = client.presign_download(audio_bucket, result.key)
        assert httpx.get(url, timeout=30).content == path.read_bytes()
        assert [d.outcome for d in client.delete(audio_bucket, result.key)] == ["deleted"]
        with pytest.raises(NotFound):
            client.stat(audio_bucket, result.key)
        # A str path, as a script would pass it (issue 19).
        again = client.upload(str(path), "8")
        assert client.stat(audio_bucket, again.key).size == len(path.read_bytes())
        assert [d.outcome for d in client.delete(audio_bucket, again.key)] == ["deleted"]


# --- the CLI -------------------------------------------------------------------------------


def test_cli_upload_presign_delete(
    stack: StackEndpoints, audio_bucket: str, tmp_path: Path, minio: Minio
) -> None:
    env = cli_env(stack, tmp_path, unique_name("cli"))
    env["MINIO_AUDIO_BUCKET_NAME"] = audio_bucket
    first, second = tmp_path / "a.ogg", tmp_path / "b c.ogg"
    first.write_bytes(b"OggS first")
    second.write_bytes(b"OggS second")

    uploaded = json_rows(
        run_cli(
            env, "upload", str(first), str(second), "--user", "9", "--meta", "lang=ru", "--json"
        )
    )
    assert [row["outcome"] for row in uploaded] == ["uploaded", "uploaded"]
    assert all(
        row["key"].startswith("user_9/") and row["metadata"]["lang"] == "ru" for row in uploaded
    )
    keys = [row["key"] for row in uploaded]
    assert sorted(
        o.object_name for o in minio.list_objects(audio_bucket, recursive=True)
    ) == sorted(keys)

    (download,) = json_rows(
        run_cli(env, "presign", "download", f"{audio_bucket}/{keys[0]}", "--json")
    )
    assert httpx.get(download["url"], timeout=30).content == b"OggS first"
    (upload,) = json_rows(
        run_cli(
            env, "presign", "upload", "--user", "9", "--name", "v.ogg", "--expires", "5m", "--json"
        )
    )
    posted = httpx.post(
        upload["url"], data=upload["fields"], files={"file": ("v.ogg", b"OggS v")}, timeout=30
    )
    assert posted.status_code == 204, posted.text
    (put,) = json_rows(
        run_cli(env, "presign", "upload", "--user", "9", "--name", "p.ogg", "--put", "--json")
    )
    assert (
        httpx.put(put["url"], headers=put["headers"], content=b"OggS p", timeout=30).status_code
        == 200
    )

    gone = json_rows(
        run_cli(
            env,
            "delete",
            "--bucket",
            audio_bucket,
            *keys,
            upload["key"],
            put["key"],
            "user_9/none.ogg",
            "--json",
        )
    )
    assert [row["outcome"] for row in gone] == ["deleted"] * 4 + ["absent"]
    assert list(minio.list_objects(audio_bucket, recursive=True)) == []

    for bad in (
        ["upload", str(tmp_path / "missing.ogg"), "--user", "9"],
        ["upload", str(first), "--user", "../9"],
        ["upload", str(first), "--user", "9", "--meta", "no-equals"],
        ["delete", "--bucket", audio_bucket, "/etc/passwd"],
        ["delete", f"{audio_bucket}/a/../b"],
        ["presign", "upload", "--user", "9", "--name", "x.ogg", "--expires", "8d"],
        ["presign", "download", "no-slash-here"],
        ["import", str(tmp_path)],
    ):
        result = run_cli(env, *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (bad, result.stderr)
        assert "Traceback" not in result.stderr


def _import_tree(root: Path, count: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i in range(count):
        relative = f"{2023 + i % 3}/session {i:03d}/запись {i}.ogg" if i % 2 else f"flat {i}.wav"
        files[relative] = f"recording {i} ".encode() * (50 + i)
    for relative, body in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    (root / ".DS_Store").write_bytes(b"junk")  # hidden files are not imported
    return files


def test_import_interrupted_resumed_verified_and_rolled_back(
    stack: StackEndpoints, audio_bucket: str, tmp_path: Path, minio: Minio
) -> None:
    env = cli_env(stack, tmp_path, unique_name("cli"))
    env["MINIO_AUDIO_BUCKET_NAME"] = audio_bucket
    source = tmp_path / "archive"
    files = _import_tree(source, 120)
    manifest = source / ".voxpersona-import.jsonl"

    # The first run is killed (SIGKILL: no cleanup at all) after a few files are recorded.
    first = subprocess.Popen(
        [sys.executable, "-m", "consumer", "import", str(source), "--user", "31", "--json"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) > 5:
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the import ended before it could be interrupted"
    recorded = len(manifest.read_text().splitlines()) - 1
    assert 5 <= recorded < len(files)

    # As if the killed run had uploaded one more file but died before recording it.
    header, done = parse_manifest(iter(manifest.read_text().splitlines()), "manifest")
    orphan = next(path for path in sorted(files) if path not in done)
    minio.put_object(
        audio_bucket,
        import_key("31", header.import_id, orphan),
        io.BytesIO(files[orphan]),
        len(files[orphan]),
        metadata={
            "sha256": hashlib.sha256(files[orphan]).hexdigest(),
            "user-id": "31",
            "import-id": header.import_id,
        },
    )

    resumed = run_cli(env, "import", str(source), "--user", "31", "--json", timeout_s=120)
    rows = json_rows(resumed)
    summary = rows[-1]["summary"]
    items = rows[:-1]
    assert sorted(item["path"] for item in items) == sorted(files)
    assert {item["path"]: item["outcome"] for item in items}[orphan] == "adopted"
    assert summary["skipped"] >= recorded
    assert summary["failed"] == 0
    assert summary["skipped"] + summary["adopted"] + summary["uploaded"] == len(files)
    assert "import " in resumed.stderr
    assert "manifest" in resumed.stderr

    # The bucket holds each file exactly once, byte for byte, with its metadata.
    listed = {o.object_name: o for o in minio.list_objects(audio_bucket, recursive=True)}
    assert len(listed) == len(files)
    by_path = {item["path"]: item["key"] for item in items}
    for relative, body in files.items():
        key = by_path[relative]
        assert key.startswith(f"user_31/import-{summary['import_id']}/")
        stat = minio.stat_object(audio_bucket, key)
        assert stat.size == len(body)
        assert stat.metadata["x-amz-meta-sha256"] == hashlib.sha256(body).hexdigest()
        assert stat.metadata["x-amz-meta-user-id"] == "31"
        assert stat.metadata["x-amz-meta-import-id"] == summary["import_id"]

    again = json_rows(run_cli(env, "import", str(source), "--user", "31", "--json"))
    assert again[-1]["summary"]["skipped"] == len(files)

    # One object is overwritten after the import: rollback keeps it and removes the rest.
    kept = by_path["flat 0.wav"]
    minio.put_object(audio_bucket, kept, io.BytesIO(b"newer"), 5)
    rolled = json_rows(run_cli(env, "import", "--rollback", str(manifest), "--json"))
    outcomes = {row["key"]: row["outcome"] for row in rolled}
    assert outcomes.pop(kept) == "changed"
    assert set(outcomes.values()) == {"deleted"}
    assert len(outcomes) == len(files) - 1
    assert [o.object_name for o in minio.list_objects(audio_bucket, recursive=True)] == [kept]
    second = json_rows(run_cli(env, "import", "--rollback", str(manifest), "--json"))
    assert sorted({row["outcome"] for row in second}) == ["changed", "gone"]
    wrong_owner = run_cli(env, "import", str(source), "--user", "32")
    assert wrong_owner.returncode == 2
    assert "belongs to the import" in wrong_owner.stderr


async def test_an_upload_retries_through_a_minio_outage(
    stack_control: Stack, settings: Settings, audio_bucket: str, minio: Minio, tmp_path: Path
) -> None:
    """MinIO is down when the upload starts: the client backs off and retries
    (MINIO_MAX_RETRIES, MINIO_RETRY_BACKOFF), and the upload lands once MinIO is back."""
    path = tmp_path / "during outage.ogg"
    path.write_bytes(b"OggS " * 2000)
    patient = settings.model_copy(update={"minio_max_retries": 8, "minio_retry_backoff": 1.0})
    await asyncio.to_thread(stack_control.stop_server, "minio")
    try:
        async with VoxClient(patient) as client:
            upload = asyncio.create_task(client.upload(path, "41"))
            await asyncio.sleep(3)
            assert not upload.done(), "the upload gave up while MinIO was down"
            await asyncio.to_thread(stack_control.start_server, "minio")
            result = await asyncio.wait_for(upload, timeout=120)
    finally:
        await asyncio.to_thread(stack_control.start_server, "minio")
    assert minio.stat_object(audio_bucket, result.key).size == path.stat().st_size
    impatient = settings.model_copy(update={"minio_max_retries": 1, "minio_retry_backoff": 0.1})
    await asyncio.to_thread(stack_control.stop_server, "minio")
    try:
        async with VoxClient(impatient) as client:
            with pytest.raises(UploadFailed, match="gave up after 2 attempts") as failed:
                await client.upload(path, "41")
        assert failed.value.retriable
    finally:
        await asyncio.to_thread(stack_control.start_server, "minio")
