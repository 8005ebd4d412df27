"""Least-privilege identities against the real MinIO: ``setup --identities`` creates the
consumer and the uploader, and MinIO then enforces exactly what their policies say.

The uploader (the bot's presigned-URL signer) can put into the audio bucket — plainly,
multipart, through a presigned PUT and a presigned POST — and do nothing else. The
consumer's own keys run the real code paths (the indexer needs no MinIO at all; a
processing worker reads audio and writes its result; the sweeper deletes under its
policy's prefix) and are refused a delete anywhere else. Every test has its own buckets,
users and policies, removed afterwards.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import urllib3
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.datatypes import PostPolicy
from minio.error import MinioAdminException, S3Error
from minio.retention import Retention
from pydantic import SecretStr

from consumer.client import VoxClient
from consumer.errors import ConfigError
from consumer.index import JobStatus, open_index
from consumer.indexer import Indexer
from consumer.minio.notify_queue import MetricsUnreadable, NotifyQueueReader
from consumer.processing.probe import AudioProbe
from consumer.processing.worker import ProcessorWorker
from consumer.retention.decisions import Outcome
from consumer.retention.policy import load_policies
from consumer.retention.sweeper import Sweeper
from consumer.settings import Settings
from consumer.setup.identities import IdentityOptions, minio_admin, secret_works, user_state
from consumer.setup.provisioning import run_setup
from consumer.setup.report import Action, Change
from infra.stack import NOTIFY_TARGET_ID
from tests import audio
from tests.conftest import StackEndpoints, unique_name
from tests.helpers import Published
from tests.integration.test_cli_e2e import cli_env, json_rows, run_cli

pytestmark = pytest.mark.integration


@dataclass
class Identities:
    """One test's buckets, settings (root keys) and identities."""

    settings: Settings
    options: IdentityOptions
    prefix: str  # of the users' access keys and the policies' names
    audio: str
    storage: str
    results: str
    consumer_key: str
    consumer_secret: str
    uploader_key: str
    secrets_file: Path

    def uploader_secret(self) -> str:
        lines = dict(line.split("=", 1) for line in self.secrets_file.read_text().splitlines())
        return lines["MINIO_UPLOADER_SECRET_KEY"]

    def client(self, access_key: str, secret_key: str) -> Minio:
        return Minio(
            self.settings.minio_endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=False,
            region=self.settings.minio_region,
        )

    def uploader(self) -> Minio:
        return self.client(self.uploader_key, self.uploader_secret())

    def consumer_settings(self) -> Settings:
        """The settings a consumer process runs with: its own keys, not the root's."""
        return self.settings.model_copy(
            update={
                "minio_access_key": self.consumer_key,
                "minio_secret_key": self.settings.minio_consumer_secret_key,
            }
        )


def _policy_file(tmp_path: Path, storage: str) -> Path:
    """One sweeper policy (an age in seconds): the consumer may delete under tmp/ of the
    storage bucket, and nowhere else."""
    path = tmp_path / "retention.json"
    policy = {"name": "scratch", "bucket": storage, "prefix": "tmp/", "seconds": 1}
    path.write_text(json.dumps({"policies": [policy]}))
    return path


@pytest.fixture
def identities(
    stack: StackEndpoints, make_bucket: Callable[..., str], tmp_path: Path
) -> Iterator[Identities]:
    prefix = unique_name("t-iam")
    # Object lock (so versioning) on the swept bucket: the sweeper deletes exact versions
    # and reads each version's retention, both through grants of the consumer's policy.
    audio_bucket, storage = make_bucket("audio"), make_bucket("storage", object_lock=True)
    results = make_bucket("res", notify_events=False)
    consumer_secret = secrets.token_urlsafe(24)
    settings = stack.settings(
        MINIO_AUDIO_BUCKET_NAME=audio_bucket,
        MINIO_BUCKET_NAME=storage,
        MINIO_RESULTS_BUCKET_NAME=results,
        MINIO_CONSUMER_ACCESS_KEY=f"{prefix}-c",
        MINIO_CONSUMER_SECRET_KEY=consumer_secret,
        MINIO_UPLOADER_ACCESS_KEY=f"{prefix}-u",
        MINIO_IDENTITY_POLICY_PREFIX=prefix,
        RETENTION_POLICIES_FILE=str(_policy_file(tmp_path, storage)),
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        KAFKA_GROUP_ID=unique_name("g"),
        MINIO_RETRY_BACKOFF=0.05,
    )
    secrets_file = tmp_path / "identities.env"
    created = Identities(
        settings=settings,
        options=IdentityOptions(secrets_file=secrets_file),
        prefix=prefix,
        audio=audio_bucket,
        storage=storage,
        results=results,
        consumer_key=f"{prefix}-c",
        consumer_secret=consumer_secret,
        uploader_key=f"{prefix}-u",
        secrets_file=secrets_file,
    )
    try:
        yield created
    finally:
        admin = minio_admin(settings)
        for key in (created.consumer_key, created.uploader_key):
            _ignore_missing(lambda key=key: admin.user_remove(key))  # type: ignore[misc]
        for role in ("consumer", "uploader"):
            _ignore_missing(lambda role=role: admin.policy_remove(f"{prefix}-{role}"))  # type: ignore[misc]


def _ignore_missing(call: Callable[[], object]) -> None:
    try:
        call()
    except MinioAdminException as exc:
        if exc._code != "404":
            raise


def _ours(changes: list[Change]) -> list[tuple[str, str, Action]]:
    return [(c.resource, c.name, c.action) for c in changes if c.resource in ("policy", "identity")]


async def _setup(ids: Identities, settings: Settings | None = None) -> list[Change]:
    return await run_setup(settings or ids.settings, ids.options)


def _denied(call: Callable[[], object]) -> None:
    with pytest.raises(S3Error) as caught:
        call()
    assert caught.value.code == "AccessDenied", caught.value


def _put(client: Minio, bucket: str, key: str, body: bytes = b"audio") -> None:
    client.put_object(bucket, key, io.BytesIO(body), len(body), content_type="audio/ogg")


async def test_setup_creates_both_identities_and_the_uploader_may_only_put_audio(
    identities: Identities, minio: Minio
) -> None:
    ids = identities
    first = await _setup(ids)
    assert _ours(first) == [
        ("policy", f"{ids.prefix}-consumer", Action.CREATED),
        ("identity", ids.consumer_key, Action.CREATED),
        ("policy", f"{ids.prefix}-uploader", Action.CREATED),
        ("identity", ids.uploader_key, Action.CREATED),
    ]
    # The consumer's secret came from the settings; the uploader's was generated into the
    # operator's file, readable by its owner only, and appears in no report line.
    assert ids.secrets_file.stat().st_mode & 0o777 == 0o600
    generated = ids.uploader_secret()
    assert len(generated) == 40
    report = json.dumps([c.__dict__ for c in first], default=str)
    assert generated not in report
    assert ids.consumer_secret not in report

    _put(minio, ids.audio, "user_1/theirs.ogg")
    uploader = ids.uploader()
    _put(uploader, ids.audio, "user_2/mine.ogg")
    big = b"\0" * (6 * 1024 * 1024)  # more than one 5 MiB part: a multipart upload
    uploader.put_object(ids.audio, "user_2/long.ogg", io.BytesIO(big), -1, part_size=5 * 1024**2)
    assert minio.stat_object(ids.audio, "user_2/long.ogg").size == len(big)

    http = urllib3.PoolManager(retries=False)
    url = uploader.presigned_put_object(ids.audio, "user_2/presigned.ogg", timedelta(minutes=5))
    assert http.request("PUT", url, body=b"presigned").status == 200
    post = PostPolicy(ids.audio, datetime.now(UTC) + timedelta(minutes=5))
    post.add_starts_with_condition("key", "user_2/")
    form = uploader.presigned_post_policy(post)
    answer = http.request(
        "POST",
        f"http://{ids.settings.minio_endpoint}/{ids.audio}",
        fields={**form, "key": "user_2/posted.ogg", "file": ("posted.ogg", b"posted")},
    )
    assert answer.status in (200, 204), answer.data
    assert minio.stat_object(ids.audio, "user_2/posted.ogg").size == len(b"posted")

    _denied(lambda: uploader.get_object(ids.audio, "user_1/theirs.ogg"))
    _denied(lambda: uploader.get_object(ids.audio, "user_2/mine.ogg"))  # no read at all
    _denied(lambda: uploader.stat_object(ids.audio, "user_1/theirs.ogg"))
    _denied(lambda: list(uploader.list_objects(ids.audio, recursive=True)))
    _denied(lambda: uploader.remove_object(ids.audio, "user_1/theirs.ogg"))
    _denied(lambda: uploader.remove_object(ids.audio, "user_2/mine.ogg"))
    _denied(lambda: _put(uploader, ids.storage, "user_2/elsewhere.ogg"))
    _denied(lambda: _put(uploader, ids.results, "forged.json"))
    _denied(lambda: uploader.get_bucket_notification(ids.audio))
    assert {o.object_name for o in minio.list_objects(ids.audio, recursive=True)} == {
        "user_1/theirs.ogg",
        "user_2/mine.ogg",
        "user_2/long.ogg",
        "user_2/presigned.ogg",
        "user_2/posted.ogg",
    }


async def test_the_consumer_keys_run_processing_and_the_sweeper_and_delete_nowhere_else(
    identities: Identities, minio: Minio, stack: StackEndpoints
) -> None:
    ids = identities
    await _setup(ids)
    settings = ids.consumer_settings()
    consumer = ids.client(ids.consumer_key, ids.consumer_secret)
    assert consumer.bucket_exists(ids.audio)  # the health check's HeadBucket

    published = Published(stack)
    await published.mark()
    _put(minio, ids.audio, "user_1/voice.wav", audio.wav(1.0))
    _put(minio, ids.storage, "tmp/scratch.ogg")
    _put(minio, ids.storage, "keep/notes.ogg")
    until = datetime.now(UTC) + timedelta(minutes=5)
    locked = io.BytesIO(b"locked")
    minio.put_object(
        ids.storage, "tmp/locked.ogg", locked, 6, retention=Retention(GOVERNANCE, until)
    )
    uploaded_at = time.monotonic()
    await published.wait(ids.audio, 1)
    await published.wait(ids.storage, 3)

    async with open_index(settings.index_url) as store:
        await asyncio.wait_for(Indexer(settings, store).run(burst=True), timeout=120)
        worker = ProcessorWorker(
            settings, store, {"audio-probe": AudioProbe()}, group_id=unique_name("p")
        )
        await asyncio.wait_for(worker.run(burst=True), timeout=120)
        jobs = await store.jobs(bucket=ids.audio)
        assert [(j.key, j.status) for j in jobs] == [("user_1/voice.wav", JobStatus.DONE)]
        assert jobs[0].result_bucket == ids.results
        result = minio.get_object(ids.results, jobs[0].result_key or "")
        try:
            assert json.loads(result.read())["result"]["container"] == "wav"
        finally:
            result.close()
            result.release_conn()

        await asyncio.sleep(max(0.0, uploaded_at + 1.5 - time.monotonic()))
        items = []
        report = await Sweeper(settings, store, load_policies(settings)).sweep(on_item=items.append)
    assert report.blocked is None
    # Without s3:GetObjectRetention MinIO would hide the lock from the sweeper's HEAD.
    assert sorted((i.key, i.outcome, i.reason) for i in items) == [
        ("tmp/locked.ogg", Outcome.SKIPPED, "retention"),
        ("tmp/scratch.ogg", Outcome.DELETED, None),
    ]
    versions = minio.list_objects(ids.storage, recursive=True, include_version=True)
    assert sorted(o.object_name or "" for o in versions) == ["keep/notes.ogg", "tmp/locked.ogg"]

    _denied(lambda: consumer.remove_object(ids.storage, "keep/notes.ogg"))
    _denied(lambda: consumer.remove_object(ids.audio, "user_1/voice.wav"))
    _denied(lambda: _put(consumer, ids.audio, "user_1/forged.ogg"))
    _denied(lambda: consumer.get_bucket_notification(ids.audio))
    assert minio.stat_object(ids.audio, "user_1/voice.wav").size


async def test_a_second_setup_changes_nothing_and_a_third_repairs_drift(
    identities: Identities, minio: Minio
) -> None:
    ids = identities
    first = await _setup(ids)
    second = await _setup(ids)
    assert {action for _, _, action in _ours(second)} == {Action.UNCHANGED}
    assert len(_ours(second)) == len(_ours(first))
    # The generated secret, now given as a setting, is accepted as it is.
    with_file = ids.settings.model_copy(
        update={"minio_uploader_secret_key": SecretStr(ids.uploader_secret())}
    )
    assert {action for _, _, action in _ours(await _setup(ids, with_file))} == {Action.UNCHANGED}

    admin = minio_admin(ids.settings)
    consumer_policy = f"{ids.prefix}-consumer"
    broader = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}],
    }
    admin.policy_add(consumer_policy, policy=broader)
    admin.attach_policy(["readwrite"], user=ids.uploader_key)
    new_secret = secrets.token_urlsafe(24)
    rotated = ids.settings.model_copy(update={"minio_consumer_secret_key": SecretStr(new_secret)})

    third = await _setup(ids, rotated)
    assert _ours(third) == [
        ("policy", consumer_policy, Action.UPDATED),
        ("identity", ids.consumer_key, Action.UPDATED),
        ("policy", f"{ids.prefix}-uploader", Action.UNCHANGED),
        ("identity", ids.uploader_key, Action.UPDATED),
    ]
    details = {c.name: c.detail for c in third if c.resource == "identity"}
    assert details[ids.consumer_key] == "secret set from MINIO_CONSUMER_SECRET_KEY"
    assert "readwrite" in details[ids.uploader_key]
    assert secret_works(ids.settings, ids.consumer_key, new_secret)
    assert not secret_works(ids.settings, ids.consumer_key, ids.consumer_secret)
    uploader_state = user_state(admin, ids.uploader_key)
    assert uploader_state is not None
    assert uploader_state.policies == {f"{ids.prefix}-uploader"}
    _denied(lambda: list(ids.uploader().list_objects(ids.audio)))  # readwrite is gone
    consumer = ids.client(ids.consumer_key, new_secret)
    _denied(lambda: _put(consumer, ids.audio, "user_1/after-drift.ogg"))  # s3:* is gone
    assert {action for _, _, action in _ours(await _setup(ids, rotated))} == {Action.UNCHANGED}

    # An identity an administrator disabled stays disabled.
    admin.user_disable(ids.uploader_key)
    fourth = await _setup(ids, rotated)
    assert ("identity", ids.uploader_key, Action.WARNING) in _ours(fourth)
    disabled = user_state(admin, ids.uploader_key)
    assert disabled is not None
    assert disabled.status == "disabled"


async def test_an_identity_to_create_without_a_secret_needs_a_secrets_file(
    identities: Identities,
) -> None:
    ids = identities
    without_file = IdentityOptions()
    with pytest.raises(ConfigError, match="MINIO_UPLOADER_SECRET_KEY unset"):
        await run_setup(ids.settings, without_file)
    admin = minio_admin(ids.settings)
    # Refused before any change: neither a user nor a policy was created.
    assert user_state(admin, ids.consumer_key) is None
    assert user_state(admin, ids.uploader_key) is None
    with pytest.raises(MinioAdminException):
        admin.policy_info(f"{ids.prefix}-consumer")
    assert not ids.secrets_file.exists()


def test_the_cli_reports_identities_in_its_lines_and_never_a_secret(
    identities: Identities, stack: StackEndpoints, tmp_path: Path
) -> None:
    ids = identities
    env = cli_env(stack, tmp_path, unique_name("g"))
    env.update(
        {
            "MINIO_AUDIO_BUCKET_NAME": ids.audio,
            "MINIO_BUCKET_NAME": ids.storage,
            "MINIO_RESULTS_BUCKET_NAME": ids.results,
            "MINIO_CONSUMER_ACCESS_KEY": ids.consumer_key,
            "MINIO_UPLOADER_ACCESS_KEY": ids.uploader_key,
            "MINIO_IDENTITY_POLICY_PREFIX": ids.prefix,
            "RETENTION_POLICIES_FILE": str(ids.settings.retention_policies_file),
        }
    )
    refused = run_cli(env, "setup", "--identities")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "consumer: error: MINIO_CONSUMER_SECRET_KEY, MINIO_UPLOADER_SECRET_KEY unset for an "
        "identity to create: set it, or give --secrets-file PATH to have one generated there"
    ]

    args = ("setup", "--identities", "--secrets-file", str(ids.secrets_file), "--json")
    rows = [row for row in json_rows(run_cli(env, *args)) if row["resource"] == "identity"]
    assert [(row["name"], row["action"]) for row in rows] == [
        (ids.consumer_key, "created"),
        (ids.uploader_key, "created"),
    ]
    assert all(f"written to {ids.secrets_file}" in row["detail"] for row in rows)
    written = ids.secrets_file.read_text()
    for name in ("MINIO_CONSUMER_SECRET_KEY", "MINIO_UPLOADER_SECRET_KEY"):
        assert f"{name}=" in written

    again = run_cli(env, *args[:-1])
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert f"unchanged identity     {ids.uploader_key} (policy {ids.prefix}-uploader)" in lines
    assert lines[-1] == "setup: nothing to change, everything is in place"
    for line in written.splitlines():
        value = line.split("=", 1)[1]
        if line.startswith("MINIO_") and "SECRET" in line:
            assert value not in again.stdout + again.stderr


async def test_the_bots_presigned_uploads_are_signed_by_the_uploader(
    identities: Identities,
) -> None:
    """With MINIO_UPLOADER_SECRET_KEY set, VoxClient signs presigned uploads with the
    uploader's keys: they work, and a GET signed the same way is refused."""
    await _setup(identities)
    settings = identities.settings.model_copy(
        update={"minio_uploader_secret_key": SecretStr(identities.uploader_secret())}
    )
    async with VoxClient(settings) as client, httpx.AsyncClient(timeout=30) as http:
        post = await client.presign_upload("12", "memo.ogg")
        assert post.fields["x-amz-credential"].startswith(f"{identities.uploader_key}/")
        posted = await http.post(post.url, data=post.fields, files={"file": ("m", b"OggS")})
        assert posted.status_code == 204, posted.text
        put = await client.presign_put("12", "memo.ogg")
        assert f"X-Amz-Credential={identities.uploader_key}%2F" in put.url
        sent = await http.put(put.url, headers=put.headers, content=b"OggS put")
        assert sent.status_code == 200, sent.text
        as_uploader = identities.uploader()
        _denied(lambda: as_uploader.stat_object(identities.audio, post.key))
        url = as_uploader.presigned_get_object(identities.audio, put.key)
        assert (await http.get(url)).status_code == 403


async def test_the_consumer_keys_read_minios_queue_and_the_uploaders_do_not(
    identities: Identities,
) -> None:
    # MinIO's metrics ask the token's key for admin:Prometheus: the consumer's policy has
    # it, the uploader's not, and the refusal says what is missing.
    ids = identities
    await _setup(ids)
    queue = await NotifyQueueReader(ids.consumer_settings(), NOTIFY_TARGET_ID).read()
    assert queue.target_id == NOTIFY_TARGET_ID
    assert queue.total_events >= queue.queue_length >= 0
    uploader = ids.settings.model_copy(
        update={
            "minio_access_key": ids.uploader_key,
            "minio_secret_key": SecretStr(ids.uploader_secret()),
        }
    )
    with pytest.raises(MetricsUnreadable, match="needs the action admin:Prometheus") as refused:
        await NotifyQueueReader(uploader, NOTIFY_TARGET_ID).read()
    assert ids.uploader_key not in str(refused.value)
