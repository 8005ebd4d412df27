"""TLS against real servers: MinIO over TLS, and the consumer against the local Kafka's
TLS listeners (certificates of the stack's test CA) with and without SCRAM-SHA-512.

MinIO: a second MinIO server of the stack's pinned build, started with a certificate from
a CA this module generates, publishing to the stack's Kafka. Every MinIO client of the
project is driven through its own code path, as a user runs it — ``setup`` (buckets,
notifications, lifecycle), ``run --role all --burst`` (the processor's ranged reads and its
result write), ``retention sweep`` (the sweeper's clients), ``status`` (the health check) —
with MINIO_USE_SSL=true and MINIO_CERT_PATH set to the CA; then the same verbs with a CA
that did not sign the server's certificate fail with one clear line.

Kafka: ``setup`` (a topic created), the indexer (an upload indexed), ``status``, ``replay``
(its admin and consumer clients) and ``reconcile --repair`` (its re-queue to the events
topic) through the broker's SSL listener and through its SASL_SSL listener with the
SCRAM-SHA-512 user made at format time; then another CA, and a wrong password, are one
line each for every one of those verbs.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from minio import Minio

from consumer.events import RECONCILE_FOUND
from consumer.minio import minio_client
from consumer.settings import Settings
from infra.stack import ensure_minio_binary, free_port
from infra.stack.process import stop_process_group
from tests import audio
from tests.conftest import StackEndpoints, unique_name
from tests.helpers import Published, read_bucket_events, topic_end_offsets
from tests.integration.test_cli_e2e import cli_env, json_rows, run_cli
from tests.integration.test_kafka_sasl import REFUSED
from tests.integration.test_kafka_sasl import dlq_topic as dlq_topic  # the fixture

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 90.0
NOT_TRUSTED = "MinIO TLS certificate not trusted: "
TOPIC_PARTITIONS = 2


@dataclass(frozen=True)
class TlsMinio:
    endpoint: str
    access_key: str
    secret_key: str
    ca_file: Path  # the CA that signed the server's certificate
    other_ca_file: Path  # a CA that did not
    events_topic: str

    def env(self, base: dict[str, str], ca_file: Path) -> dict[str, str]:
        """A CLI environment pointing at this server over TLS with ``ca_file``."""
        return {
            **base,
            "MINIO_ENDPOINT": self.endpoint,
            "MINIO_ACCESS_KEY": self.access_key,
            "MINIO_SECRET_KEY": self.secret_key,
            "MINIO_USE_SSL": "true",
            "MINIO_CERT_PATH": str(ca_file),
            "KAFKA_EVENTS_TOPIC": self.events_topic,
            "KAFKA_EVENTS_PARTITIONS": str(TOPIC_PARTITIONS),
        }


def _write_certificates(directory: Path) -> tuple[Path, Path]:
    """MinIO's certs dir (public.crt, private.key) signed by a fresh CA; (that CA's PEM,
    another CA's PEM)."""
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certs = directory / "certs"
    certs.mkdir(parents=True)
    (certs / "public.crt").write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(certs / "private.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return directory / "ca.pem", directory / "other-ca.pem"


def _wait_ready(url: str, ca_file: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"TLS MinIO exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"TLS MinIO not ready: {log.read_text(errors='replace')[-2000:]}")


async def _create_topic(bootstrap: str, topic: str, *, delete: bool = False) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if delete:
            await admin.delete_topics([topic])
        else:
            await admin.create_topics([NewTopic(topic, TOPIC_PARTITIONS, 1)])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def tls_minio(
    stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsMinio]:
    """A MinIO server with TLS only, notifying the stack's Kafka on a topic of its own."""
    root = tmp_path_factory.mktemp("tls-minio")
    ca_file, other_ca_file = _write_certificates(root)
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    topic = unique_name("tls-events")
    # MinIO refuses a notification target it cannot reach: the topic comes first.
    asyncio.run(_create_topic(bootstrap, topic))
    port, console_port = free_port(), free_port()
    user, password = "tls" + secrets.token_hex(6), secrets.token_urlsafe(24)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MINIO_")},
        "MINIO_ROOT_USER": user,
        "MINIO_ROOT_PASSWORD": password,
        "MINIO_API_SYNC_EVENTS": "on",
        "MINIO_UPDATE": "off",
        "MINIO_NOTIFY_KAFKA_ENABLE_VOXPERSONA": "on",
        "MINIO_NOTIFY_KAFKA_BROKERS_VOXPERSONA": bootstrap,
        "MINIO_NOTIFY_KAFKA_TOPIC_VOXPERSONA": topic,
        "MINIO_NOTIFY_KAFKA_QUEUE_DIR_VOXPERSONA": str(root / "queue"),
    }
    (root / "queue").mkdir()
    log = root / "minio.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(ensure_minio_binary()),
                "server",
                str(root / "data"),
                "--address",
                f"127.0.0.1:{port}",
                "--console-address",
                f"127.0.0.1:{console_port}",
                "--certs-dir",
                str(root / "certs"),
                "--quiet",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_ready(f"https://127.0.0.1:{port}/minio/health/ready", ca_file, process, log)
        yield TlsMinio(f"127.0.0.1:{port}", user, password, ca_file, other_ca_file, topic)
    finally:
        stop_process_group(process.pid)
        process.wait(timeout=30)
        asyncio.run(_create_topic(bootstrap, topic, delete=True))


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the structured log lines (JSON): what the CLI itself said."""
    return [line for line in result.stderr.splitlines() if not line.startswith("{")]


def _buckets(prefix: str) -> dict[str, str]:
    return {
        "MINIO_AUDIO_BUCKET_NAME": unique_name(f"{prefix}-audio"),
        "MINIO_BUCKET_NAME": unique_name(f"{prefix}-storage"),
        "MINIO_RESULTS_BUCKET_NAME": unique_name(f"{prefix}-results"),
    }


async def test_every_minio_client_works_over_tls_and_an_unknown_ca_is_one_line(
    tls_minio: TlsMinio, stack: StackEndpoints, tmp_path: Path
) -> None:
    buckets = _buckets("tls")
    base = cli_env(stack, tmp_path, unique_name("tls-group"))
    base.update(buckets, KAFKA_DLQ_TOPIC=stack.values.get("KAFKA_DLQ_TOPIC", "minio-events-dlq"))
    env = tls_minio.env(base, tls_minio.ca_file)

    # setup: buckets, notifications (the server checks its Kafka target), lifecycle.
    setup = await asyncio.to_thread(run_cli, env, "setup", "--json")
    assert setup.returncode == 0, setup.stderr
    created = {
        (row["resource"], row["name"]) for row in json_rows(setup) if row["action"] != "unchanged"
    }
    for bucket in buckets.values():
        assert ("bucket", bucket) in created
        assert ("notification", bucket) in created

    # An upload over TLS; its event comes through the stack's Kafka.
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
    client = minio_client(settings)
    audio_bucket, key = buckets["MINIO_AUDIO_BUCKET_NAME"], "user_7/over tls.wav"
    body = audio.wav(0.5)
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    start = await topic_end_offsets(bootstrap, tls_minio.events_topic)
    await asyncio.to_thread(
        client.put_object, audio_bucket, key, io.BytesIO(body), len(body), "audio/wav"
    )
    events = await read_bucket_events(bootstrap, tls_minio.events_topic, audio_bucket, start, 1)
    assert len(events) == 1

    # The indexer, the processor (ranged GETs, the result PUT) and the sweeper, one process.
    run = await asyncio.to_thread(run_cli, env, "run", "--role", "all", "--burst", timeout_s=180)
    assert run.returncode == 0, run.stderr[-3000:]
    listed = json_rows(
        await asyncio.to_thread(run_cli, env, "ls", "--bucket", audio_bucket, "--json")
    )
    assert [(row["key"], row["processing_status"]) for row in listed] == [(key, "done")]
    results = list(client.list_objects(buckets["MINIO_RESULTS_BUCKET_NAME"], recursive=True))
    assert [obj.object_name for obj in results] == [f"{audio_bucket}/{key}/null/audio-probe.json"]

    # The sweeper's own clients (HEAD of each candidate) and the health check.
    policies = tmp_path / "policies.json"
    policies.write_text(
        json.dumps({"policies": [{"name": "tls-drill", "bucket": audio_bucket, "seconds": 1}]})
    )
    env["RETENTION_POLICIES_FILE"] = str(policies)
    sweep = await asyncio.to_thread(run_cli, env, "retention", "sweep", "--dry-run", "--json")
    assert sweep.returncode == 0, sweep.stderr
    assert [(row["key"], row["outcome"]) for row in json_rows(sweep)] == [(key, "would_delete")]
    status = await asyncio.to_thread(run_cli, env, "status", "--json")
    minio_check = json.loads(status.stdout)["connections"]["minio"]
    assert (minio_check["ok"], minio_check["error"]) == (True, None)

    # The same verbs with a CA that did not sign the server's certificate.
    wrong = tls_minio.env(
        {**base, "RETENTION_POLICIES_FILE": str(policies)}, tls_minio.other_ca_file
    )
    expected = f"(MINIO_CERT_PATH={tls_minio.other_ca_file})"
    for verb in (("setup",), ("retention", "sweep", "--dry-run")):
        result = await asyncio.to_thread(run_cli, wrong, *verb)
        assert result.returncode == 1, (verb, result.stderr)
        assert "Traceback" not in result.stderr
        assert tls_minio.secret_key not in result.stderr + result.stdout
        (line,) = _error_lines(result)
        assert line.startswith(f"consumer: failed: {NOT_TRUSTED}"), line
        assert line.endswith(expected), line
    status = await asyncio.to_thread(run_cli, wrong, "status", "--json")
    assert status.returncode == 1
    minio_check = json.loads(status.stdout)["connections"]["minio"]
    assert not minio_check["ok"]
    assert minio_check["error"].startswith(NOT_TRUSTED), minio_check
    assert minio_check["error"].endswith(expected)


async def test_the_processor_fails_a_job_at_once_when_the_ca_is_wrong(
    tls_minio: TlsMinio, stack: StackEndpoints, tmp_path: Path
) -> None:
    """The indexer (Kafka only) indexes the upload; the processor cannot read it over TLS
    with the wrong CA: the job fails without retries, with the reason, and the run goes on."""
    buckets = _buckets("tlsbad")
    base = cli_env(stack, tmp_path, unique_name("tls-bad-group"))
    base.update(buckets, KAFKA_DLQ_TOPIC=stack.values.get("KAFKA_DLQ_TOPIC", "minio-events-dlq"))
    good = tls_minio.env(base, tls_minio.ca_file)
    setup = await asyncio.to_thread(run_cli, good, "setup")
    assert setup.returncode == 0, setup.stderr
    client = minio_client(Settings(_env_file=None, **good))  # type: ignore[call-arg]
    audio_bucket, key = buckets["MINIO_AUDIO_BUCKET_NAME"], "user_8/unreadable.wav"
    body = audio.wav(0.2)
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    start = await topic_end_offsets(bootstrap, tls_minio.events_topic)
    await asyncio.to_thread(
        client.put_object, audio_bucket, key, io.BytesIO(body), len(body), "audio/wav"
    )
    assert (
        len(await read_bucket_events(bootstrap, tls_minio.events_topic, audio_bucket, start, 1))
        == 1
    )

    wrong = tls_minio.env(base, tls_minio.other_ca_file)
    run = await asyncio.to_thread(run_cli, wrong, "run", "--role", "all", "--burst", timeout_s=180)
    assert run.returncode == 0, run.stderr[-3000:]
    listed = json_rows(
        await asyncio.to_thread(run_cli, wrong, "ls", "--bucket", audio_bucket, "--json")
    )
    assert [(row["key"], row["processing_status"]) for row in listed] == [(key, "failed")]
    with sqlite3.connect(tmp_path / "index.sqlite3") as conn:
        attempts, error = conn.execute(
            "SELECT attempts, last_error FROM jobs WHERE bucket = ? AND key = ?",
            (audio_bucket, key),
        ).fetchone()
    assert attempts == 1
    assert NOT_TRUSTED in error


# --- Kafka over TLS (SSL) and SCRAM-SHA-512 over TLS (SASL_SSL) ---------------------------

KAFKA_TLS_VARS = (
    "KAFKA_SSL_BOOTSTRAP_SERVERS",
    "KAFKA_SCRAM_BOOTSTRAP_SERVERS",
    "KAFKA_STACK_CAFILE",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
)
KAFKA_NOT_TRUSTED = "consumer: failed: Kafka TLS certificate not trusted at "


@pytest.fixture
def kafka_listeners(stack: StackEndpoints) -> dict[str, dict[str, str]]:
    """The settings of the stack broker's TLS listeners, by security protocol; the local
    stack always has them."""
    missing = [name for name in KAFKA_TLS_VARS if not stack.values.get(name)]
    if missing:
        message = f"{stack.origin} endpoints name no Kafka TLS listener ({', '.join(missing)})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    values = stack.values
    return {
        "SSL": {
            "KAFKA_BOOTSTRAP_SERVERS": values["KAFKA_SSL_BOOTSTRAP_SERVERS"],
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CAFILE": values["KAFKA_STACK_CAFILE"],
        },
        "SASL_SSL": {
            "KAFKA_BOOTSTRAP_SERVERS": values["KAFKA_SCRAM_BOOTSTRAP_SERVERS"],
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SSL_CAFILE": values["KAFKA_STACK_CAFILE"],
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": values["KAFKA_SASL_USERNAME"],
            "KAFKA_SASL_PASSWORD": values["KAFKA_SASL_PASSWORD"],
        },
    }


def _kafka_env(
    stack: StackEndpoints,
    tmp_path: Path,
    make_bucket: Callable[..., str],
    listener: dict[str, str],
    dlq_topic: str,
) -> dict[str, str]:
    """A CLI environment whose every Kafka client goes through ``listener`` (MinIO keeps
    publishing through the PLAINTEXT one), with buckets of this test's own."""
    env = cli_env(stack, tmp_path, unique_name("tls-kafka-group"))
    env.update(
        {
            "MINIO_AUDIO_BUCKET_NAME": make_bucket("ktls-audio", notify_events=False),
            "MINIO_BUCKET_NAME": make_bucket("ktls-storage", notify_events=False),
            "MINIO_RESULTS_BUCKET_NAME": make_bucket("ktls-results", notify_events=False),
            "KAFKA_DLQ_TOPIC": dlq_topic,
        },
        **listener,
    )
    return env


# Every verb whose clients talk to Kafka; reconcile's only when it has something to re-queue.
KAFKA_VERBS = (
    ("setup",),
    ("run", "--role", "indexer", "--burst"),
    ("replay", "--since", "5m"),
    ("reconcile", "--repair"),
)


def _unindexed_upload(minio: Minio, env: dict[str, str], key: str) -> str:
    """An audio object the index has not seen: reconcile --repair re-indexes it and
    queues it for processing on the events topic (a Kafka producer). Its bucket."""
    bucket = env["MINIO_AUDIO_BUCKET_NAME"]
    minio.put_object(bucket, key, io.BytesIO(b"ogg bytes"), 9, content_type="audio/ogg")
    return bucket


async def _kafka_verbs_fail(
    env: dict[str, str], minio: Minio, *secrets_: str
) -> tuple[list[str], str]:
    """Every verb of KAFKA_VERBS fails with exit 1 and one line (no traceback, none of
    ``secrets_``), ``status`` with exit 1: (those lines, the status' Kafka error)."""
    bucket = _unindexed_upload(minio, env, "user_4/to repair.ogg")
    lines = []
    for verb in KAFKA_VERBS:
        if verb[0] == "reconcile":
            verb = (*verb, "--bucket", bucket)
        result = await asyncio.to_thread(run_cli, env, *verb, timeout_s=120)
        assert result.returncode == 1, (verb, result.stderr[-3000:])
        assert "Traceback" not in result.stderr
        for secret in secrets_:
            assert secret not in result.stderr + result.stdout
        # replay announces its group first; the failure is one line after it.
        said = [line for line in _error_lines(result) if not line.startswith("replay: group ")]
        assert len(said) == 1, (verb, said)
        lines.extend(said)
    status = await asyncio.to_thread(run_cli, env, "status", "--json")
    assert status.returncode == 1
    for secret in secrets_:
        assert secret not in status.stdout + status.stderr
    kafka_check = json.loads(status.stdout)["connections"]["kafka"]
    assert not kafka_check["ok"]
    return lines, str(kafka_check["error"])


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_setup_and_the_indexer_over_the_stack_kafka_tls_listeners(
    protocol: str,
    stack: StackEndpoints,
    kafka_listeners: dict[str, dict[str, str]],
    dlq_topic: str,
    make_bucket: Callable[..., str],
    minio: Minio,
    tmp_path: Path,
) -> None:
    env = _kafka_env(stack, tmp_path, make_bucket, kafka_listeners[protocol], dlq_topic)

    # setup's topic creation through the TLS listener (and the buckets' notifications).
    setup = await asyncio.to_thread(run_cli, env, "setup", "--json")
    assert setup.returncode == 0, setup.stderr
    rows = {(row["resource"], row["name"]): row["action"] for row in json_rows(setup)}
    assert rows[("topic", dlq_topic)] == "created"
    bucket = env["MINIO_AUDIO_BUCKET_NAME"]
    assert rows[("notification", bucket)] == "created"

    # MinIO publishes through the PLAINTEXT listener; the indexer reads through TLS.
    published = Published(stack)
    await published.mark()
    key = f"user_4/over {protocol.lower()}.ogg"
    await asyncio.to_thread(minio.put_object, bucket, key, io.BytesIO(b"ogg bytes"), 9)
    await published.wait(bucket, 1)
    run = await asyncio.to_thread(
        run_cli, env, "run", "--role", "indexer", "--burst", timeout_s=180
    )
    assert run.returncode == 0, run.stderr[-3000:]
    listed = json_rows(await asyncio.to_thread(run_cli, env, "ls", "--bucket", bucket, "--json"))
    assert [row["key"] for row in listed] == [key]
    status = await asyncio.to_thread(run_cli, env, "status", "--json")
    kafka_check = json.loads(status.stdout)["connections"]["kafka"]
    assert (kafka_check["ok"], kafka_check["error"]) == (True, None)

    # replay: its admin client (the topic's partitions) and its consumer group, through TLS;
    # the upload indexed above comes again and is a duplicate.
    replay = await asyncio.to_thread(
        run_cli, env, "replay", "--since", "10m", "--json", timeout_s=180
    )
    assert replay.returncode == 0, replay.stderr[-3000:]
    replayed = json.loads(replay.stdout)
    assert replayed["messages_read"] >= 1, replayed
    assert replayed["duplicates"] >= 1, replayed

    # reconcile --repair: an upload the index has not seen is re-indexed, then queued for
    # processing through the TLS listener (its producer); the record reaches the topic.
    missed = "user_4/missed.ogg"
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    start = await topic_end_offsets(bootstrap, stack.events_topic)
    _unindexed_upload(minio, env, missed)
    repair = await asyncio.to_thread(
        run_cli, env, "reconcile", "--repair", "--bucket", bucket, "--json", timeout_s=120
    )
    assert repair.returncode == 0, repair.stderr[-3000:]
    assert [(row["key"], row["repair"]) for row in json_rows(repair)] == [(missed, "reindexed")]
    assert "queued_for_processing=1" in repair.stderr, repair.stderr[-3000:]
    # MinIO's own event of the upload and the reconcile's re-queue, in either order.
    records = await read_bucket_events(bootstrap, stack.events_topic, bucket, start, 2)
    queued = [r.value for r in records if r.value["EventName"] == RECONCILE_FOUND]
    assert [record["Key"] for record in queued] == [f"{bucket}/{missed}"], records


async def test_the_stack_kafka_tls_listener_with_another_ca_is_one_line(
    stack: StackEndpoints,
    minio: Minio,
    kafka_listeners: dict[str, dict[str, str]],
    dlq_topic: str,
    make_bucket: Callable[..., str],
    tmp_path: Path,
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    listener = {**kafka_listeners["SSL"], "KAFKA_SSL_CAFILE": str(other_ca)}
    env = _kafka_env(stack, tmp_path, make_bucket, listener, dlq_topic)
    expected = f"(KAFKA_SSL_CAFILE={other_ca})"
    lines, status_error = await _kafka_verbs_fail(env, minio)
    for line in lines:
        assert line.startswith(f"{KAFKA_NOT_TRUSTED}{listener['KAFKA_BOOTSTRAP_SERVERS']}: "), line
        assert line.endswith(expected), line
    assert status_error.endswith(expected), status_error


async def test_a_wrong_scram_password_is_one_line_without_the_password(
    stack: StackEndpoints,
    minio: Minio,
    kafka_listeners: dict[str, dict[str, str]],
    dlq_topic: str,
    make_bucket: Callable[..., str],
    tmp_path: Path,
) -> None:
    right = kafka_listeners["SASL_SSL"]["KAFKA_SASL_PASSWORD"]
    wrong_password = "wrong-" + secrets.token_urlsafe(12)
    listener = {**kafka_listeners["SASL_SSL"], "KAFKA_SASL_PASSWORD": wrong_password}
    env = _kafka_env(stack, tmp_path, make_bucket, listener, dlq_topic)
    expected = f"{REFUSED}{listener['KAFKA_SASL_USERNAME']} (SCRAM-SHA-512 over SASL_SSL): "
    lines, status_error = await _kafka_verbs_fail(env, minio, wrong_password, right)
    for line in lines:
        assert line.startswith("consumer: failed: Kafka at "), line
        assert expected in line, line
    assert expected in status_error, status_error
