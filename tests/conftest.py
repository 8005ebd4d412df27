"""Fixtures that hand every integration test a running stack (MinIO, Kafka, PostgreSQL).

Where the stack comes from, in order:
1. environment variables naming existing endpoints (MINIO_ENDPOINT, MINIO_ACCESS_KEY,
   MINIO_SECRET_KEY, KAFKA_BOOTSTRAP_SERVERS and POSTGRES_URL all set) — used as they are;
2. a Docker engine that answers — testcontainers' MinIO, Kafka and PostgreSQL modules;
3. otherwise the local processes of infra/stack/ (what CI does on this machine).

The stack is started once per session. Each test gets its own buckets, topics and group
ids from the factory fixtures below, which also clean up after it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumer.index import IndexStore, open_index, sqlite_path
from consumer.minio import minio_client
from consumer.settings import Settings
from consumer.setup.notify_config import load_notify_config
from consumer.setup.provisioning import ensure_notifications
from tests.hypothesis_profiles import load_hypothesis_profile

if TYPE_CHECKING:
    from infra.stack import Stack

REPO_ROOT = Path(__file__).resolve().parent.parent
load_hypothesis_profile()
_ENDPOINT_VARS = (
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "KAFKA_BOOTSTRAP_SERVERS",
    "POSTGRES_URL",
)


@dataclass(frozen=True)
class StackEndpoints:
    """What a test needs to reach the stack; ``values`` uses the settings' env names."""

    values: dict[str, str] = field(repr=False)  # holds the secret key and a password
    origin: str  # "env", "docker" or "local"
    control: Stack | None = None  # the local stack, for tests that stop and start servers
    # Replicas of each topic the tests create (3 on the fault suite's Kafka cluster).
    topic_replicas: int = 1

    @property
    def events_topic(self) -> str:
        return self.values.get("KAFKA_EVENTS_TOPIC", "minio-events")

    @property
    def postgres_url(self) -> str:
        return self.values["POSTGRES_URL"]

    def settings(self, **overrides: object) -> Settings:
        """Settings pointing at this stack; ``overrides`` by env name or field name."""
        data: dict[str, object] = {k: v for k, v in self.values.items() if k != "POSTGRES_URL"}
        # No automatic reconcile of the stack's shared buckets from a test's consumer (it
        # would queue their objects on the shared events topic); tests that want it say so.
        data["RECONCILE_AUTO"] = False
        data.update(overrides)
        return Settings(_env_file=None, **data)  # type: ignore[call-arg]


def _from_environment() -> StackEndpoints | None:
    if all(os.environ.get(name) for name in _ENDPOINT_VARS):
        values = {name: os.environ[name] for name in _ENDPOINT_VARS}
        for optional in (
            "KAFKA_EVENTS_TOPIC",
            "KAFKA_DLQ_TOPIC",
            "MINIO_USE_SSL",
            "KAFKA_SASL_BOOTSTRAP_SERVERS",
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SSL_BOOTSTRAP_SERVERS",
            "KAFKA_SCRAM_BOOTSTRAP_SERVERS",
            "KAFKA_STACK_CAFILE",
            "KAFKA_FAULTS_LISTENER",
            "KAFKA_FAULTS_BOOTSTRAP_SERVERS",
        ):
            if os.environ.get(optional):
                values[optional] = os.environ[optional]
        return StackEndpoints(values, "env")
    return None


def _docker_answers() -> bool:
    """True when a Docker engine answers its ``/_ping`` (checked with a plain socket: the
    docker library leaks its socket when the engine is absent)."""
    if os.environ.get("VOXPERSONA_TEST_NO_DOCKER"):
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
    try:
        if host.startswith("unix://"):
            path = host[len("unix://") :]
            if not os.path.exists(path):
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                sock.connect(path)
                sock.sendall(request)
                return b" 200 " in sock.recv(1024)
        if host.startswith("tcp://"):
            address, _, port = host[len("tcp://") :].rpartition(":")
            with socket.create_connection((address, int(port)), timeout=3) as sock:
                sock.sendall(request)
                return b" 200 " in sock.recv(1024)
    except (OSError, ValueError):
        return False
    return False


@pytest.fixture(scope="session")
def stack() -> Iterator[StackEndpoints]:
    """The running stack for this test session (see the module docstring)."""
    from_env = _from_environment()
    if from_env is not None:
        yield from_env
        return
    if _docker_answers():
        from tests.docker_stack import docker_stack

        with docker_stack() as values:
            yield StackEndpoints(values, "docker")
        return
    from infra.stack import Stack

    state_dir = Path(tempfile.mkdtemp(prefix="voxpersona-test-stack-"))
    # Throwaway: its state dir is deleted below, so PostgreSQL may skip fsync (faster).
    local = Stack(state_dir, throwaway=True)
    try:
        local.up()
        yield StackEndpoints(local.env(), "local", local)
    finally:
        local.down(quiet=True)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def stack_control(stack: StackEndpoints) -> Stack:
    """The local stack's handle, to stop and start one server (outage tests).

    Endpoints from the environment or Docker cannot be stopped from here: such a run skips
    these tests, except in CI, which always runs the local stack and must never skip.
    """
    if stack.control is None:
        message = f"outage tests need the local stack, not {stack.origin} endpoints"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return stack.control


def unique_name(prefix: str) -> str:
    """A bucket/topic/group name no other test uses (S3 bucket-name rules respected)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def minio(stack: StackEndpoints) -> Minio:
    return minio_client(stack.settings())


def _empty_and_remove_bucket(client: Minio, bucket: str) -> None:
    """Every version goes, also those under GOVERNANCE retention or a legal hold (the
    object-lock tests leave such versions behind; COMPLIANCE is never used in tests)."""
    if not client.bucket_exists(bucket):
        return
    doomed = [
        DeleteObject(obj.object_name or "", obj.version_id)
        for obj in client.list_objects(bucket, recursive=True, include_version=True)
    ]
    refused = list(client.remove_objects(bucket, doomed, bypass_governance_mode=True))
    for error in refused:
        # A legal hold, or a passing refusal (a distributed MinIO short of a write quorum:
        # SlowDownWrite) in a bucket without object lock: the retry below decides.
        with contextlib.suppress(S3Error):
            client.disable_object_legal_hold(bucket, error.name or "", error.version_id)
    retried = [DeleteObject(error.name or "", error.version_id) for error in refused]
    for error in client.remove_objects(bucket, retried, bypass_governance_mode=True):
        raise AssertionError(f"cleanup of {bucket} failed: {error}")
    client.remove_bucket(bucket)


@pytest.fixture
def make_bucket(minio: Minio, stack: StackEndpoints) -> Iterator[Callable[..., str]]:
    """Factory: a fresh bucket wired to the Kafka target like minio-notify.json's buckets.

    ``make_bucket(notify_events=False)`` gives a bucket without notifications,
    ``make_bucket(object_lock=True)`` one with object lock (and so versioning) enabled.
    """
    created: list[str] = []
    settings = stack.settings()
    notify = load_notify_config(REPO_ROOT / "minio-notify.json", settings)
    rules = notify.for_bucket(settings.minio_audio_bucket_name)

    def factory(prefix: str = "t", *, notify_events: bool = True, object_lock: bool = False) -> str:
        bucket = unique_name(prefix)
        try:
            minio.make_bucket(bucket, object_lock=object_lock)
        except S3Error as exc:
            # The name is this test's alone: "already yours" means an earlier attempt of
            # this same request succeeded and the client retried it (seen with a MinIO
            # cluster just started, under the whole suite's load).
            if exc.code != "BucketAlreadyOwnedByYou":
                raise
        created.append(bucket)
        if notify_events:
            ensure_notifications(minio, bucket, rules, notify.target.arn)
        return bucket

    yield factory
    for bucket in created:
        _empty_and_remove_bucket(minio, bucket)


@pytest.fixture
async def make_topic(stack: StackEndpoints) -> AsyncIterator[Callable[..., object]]:
    """Factory (async): a fresh Kafka topic, deleted after the test."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.values["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    created: list[str] = []

    async def factory(prefix: str = "t", partitions: int = 1) -> str:
        topic = unique_name(prefix)
        await admin.create_topics([NewTopic(topic, partitions, stack.topic_replicas)])
        created.append(topic)
        return topic

    try:
        yield factory
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


@pytest.fixture
def group_id() -> str:
    return unique_name("group")


# --------------------------------------------------------------------------------------
# Index backends: one fresh database per test, on each backend. SQLite: a file in
# tmp_path. PostgreSQL: a new database ``test_<uuid>`` on the session's server, dropped
# after the test, so tests never share state.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """Where one test's index lives; ``new_store()`` gives another, unstarted, handle."""

    name: str
    url: str

    def new_store(self) -> IndexStore:
        return open_index(self.url)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a raw query, bypassing the store (to look at bookkeeping tables)."""
        if self.name == "sqlite":
            with sqlite3.connect(sqlite_path(self.url)) as conn:
                return list(conn.execute(sql).fetchall())
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_admin_url(request: pytest.FixtureRequest, backend_name: str) -> str | None:
    # Only the PostgreSQL runs need the stack; resolved here, in a synchronous fixture,
    # because starting the stack must not happen inside a running event loop.
    if backend_name != "postgres":
        return None
    stack: StackEndpoints = request.getfixturevalue("stack")
    return stack.postgres_url


@pytest.fixture
async def backend(
    backend_name: str, pg_admin_url: str | None, tmp_path: Path
) -> AsyncIterator[Backend]:
    if pg_admin_url is None:
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'index.sqlite3'}")
        return
    name = f"test_{uuid.uuid4().hex}"
    # Identifiers cannot be bound parameters; the name is generated above, not input.
    await _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield Backend("postgres", urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl())
    finally:
        await _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------
# Spans: one global TracerProvider for the session (OpenTelemetry allows one), recording
# into memory only while a test holds the ``spans`` fixture.
# --------------------------------------------------------------------------------------


class _SwitchedExporter(SpanExporter):
    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.enabled = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.enabled:
            return self.memory.export(spans)
        return SpanExportResult.SUCCESS


_SWITCHED = _SwitchedExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this test (the consumer's tracer records once a provider exists)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_SWITCHED))
        trace.set_tracer_provider(provider)
    _SWITCHED.memory.clear()
    _SWITCHED.enabled = True
    try:
        yield _SWITCHED.memory
    finally:
        _SWITCHED.enabled = False
        _SWITCHED.memory.clear()
