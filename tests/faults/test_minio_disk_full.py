"""MinIO's disk full: a MinIO of the scenario's own, its drive a small tmpfs, publishing
to the session's Kafka like the stack's. While the drive is full, uploads are refused
with S3's error (no half-written object, no event for them) and the consumer stays up;
the index stays equal to the bucket throughout, and once space is back new uploads go
through and everything is indexed and processed.

The module overrides ``stack`` and ``minio`` so the fault suite's rig (buckets, uploader,
consumer, checks) works on this MinIO unchanged.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from consumer.minio import minio_client
from infra.stack import Credentials, StackState, free_port
from infra.stack.minio import Minio as MinioServer
from infra.stack.minio import ensure_minio_binary
from infra.stack.process import Children, stop_process_group, wait_for
from infra.stack.server import Context, Topics
from tests.conftest import StackEndpoints
from tests.faults.conftest import RigFactory
from tests.faults.harness import Op, plan_traffic, read_range
from tests.faults.invariants import index_matches_bucket, published_events
from tests.faults.test_disk_full import fill, mounted_tmpfs, resize, traffic_under

pytestmark = [pytest.mark.integration, pytest.mark.faults]

DRIVE_SIZE = "96m"
RESUME_BOUND_S = 60.0


@pytest.fixture
def minio_drive(tmp_path: Path) -> Path:
    """Where the scenario's MinIO keeps its data (Context's layout: <state>/minio/data)."""
    return tmp_path / "minio-stack" / "minio" / "data"


@pytest.fixture
def stack(stack: StackEndpoints, minio_drive: Path) -> Iterator[StackEndpoints]:
    """The session's stack with a MinIO of this test's own, on a small drive."""
    state_dir = minio_drive.parent.parent
    data = minio_drive
    kafka_port = int(stack.values["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    state = StackState(minio_port=free_port(), minio_console_port=free_port())
    state.kafka_port = kafka_port
    children = Children()
    logs = state_dir / "logs"

    def spawn(name: str, cmd: list[str], env: dict[str, str], **popen: object) -> None:
        state.pids[name] = children.spawn(cmd, env, logs / f"{name}.log", **popen)

    topics = Topics(stack.events_topic, stack.values.get("KAFKA_DLQ_TOPIC", ""), 1)
    ctx = Context(state_dir, state, Credentials.generate(), topics, spawn, throwaway=True)
    server = MinioServer()
    with mounted_tmpfs(data, DRIVE_SIZE):
        server.start(ctx, ensure_minio_binary())
        try:
            wait_for(
                "minio",
                lambda: server.ready(ctx),
                60,
                logs / "minio.log",
                lambda: children.is_alive(state.pids["minio"]),
            )
            yield StackEndpoints({**stack.values, **server.env(ctx)}, "local")
        finally:
            stop_process_group(state.pids["minio"])
            children.stopped(state.pids["minio"])


@pytest.fixture
def minio(stack: StackEndpoints) -> Minio:
    return minio_client(stack.settings())


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_minio_with_a_full_drive(make_rig: RigFactory, minio_drive: Path) -> None:
    rig = await make_rig()
    rig.consumer.start()
    warm_up = rig.uploader(plan_traffic(rig.rng, 20), pace_s=0.02)
    warm_up.start()
    await asyncio.to_thread(warm_up.wait, 60)
    await rig.converge(timeout_s=60)

    await asyncio.to_thread(fill, minio_drive)
    # Uploads meet the full drive: refused with S3's error, each retried by the uploader.
    refused: list[str] = []
    for n in range(5):
        body = bytes([n]) * 200_000
        try:
            await asyncio.to_thread(_put, rig.minio, rig.bucket, f"full/refused-{n}.bin", body)
        except S3Error as exc:
            refused.append(exc.code or "")
    assert len(refused) == 5, f"MinIO on a full drive took {5 - len(refused)} uploads"
    print(f"uploads refused by the full drive: {sorted(set(refused))}")
    # Cleanly: nothing of them in the bucket, no event about them.
    listed = {obj.object_name for obj in rig.minio.list_objects(rig.bucket, recursive=True)}
    assert not {k for k in listed if k and k.startswith("full/refused")}, listed
    records = await read_range(rig.bootstrap, rig.topic, rig.start)
    published = {e.key for e in published_events(records, rig.bucket)}
    assert not {k for k in published if k.startswith("full/refused")}, published
    await rig.converge(timeout_s=30)
    await index_matches_bucket(rig.store, rig.minio, rig.bucket, versioned=False)
    rig.consumer.assert_alive()

    resize(minio_drive, "256m")  # space is back
    freed = time.monotonic()
    after = rig.uploader(
        [
            *traffic_under("after", plan_traffic(rig.rng, 10)),
            Op("put", "full/after.bin", b"space is back"),
        ],
        pace_s=0.02,
    )
    after.start()
    await asyncio.to_thread(after.wait, 60)
    await rig.converge(timeout_s=RESUME_BOUND_S)
    print(f"caught up {time.monotonic() - freed:.1f} s after space came back")
    await rig.finish(tracebacks=False)


def _put(client: Minio, bucket: str, key: str, body: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(body), len(body))
