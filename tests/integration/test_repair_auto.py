"""The automatic reconcile against the real MinIO and index (both backends): a group of
processes runs one reconcile at a time (the lease in the jobs table), a later run
compares only what was written since the last clean point, and a MinIO queue that holds
an entry it never sends does not hold the runs up. The triggers from MinIO's queue run
end to end in the fault suite (tests/faults/test_faults.py)."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from bench.private_minio import PrivateMinio
from consumer.events import EventKind
from consumer.index import open_index
from consumer.minio import minio_client
from consumer.minio.queue_watch import QueueWatch
from consumer.repair.auto import LEASE_BUCKET, AutoReconcile, Reason
from infra.stack import NOTIFY_TARGET_ID
from tests.conftest import Backend, StackEndpoints, unique_name
from tests.faults.invariants import index_rows
from tests.index.factories import event

pytestmark = pytest.mark.integration


async def _no_lag() -> int:
    return 0


async def test_one_run_at_a_time_and_the_next_narrowed_to_the_clean_point(
    backend: Backend,
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    make_topic: Callable[..., Awaitable[str]],
) -> None:
    # No notifications: the index learns of the objects only from the reconcile.
    bucket = make_bucket("auto", notify_events=False)
    settings = stack.settings(
        INDEX_URL=backend.url,
        KAFKA_EVENTS_TOPIC=await make_topic("events", 1),
        RECONCILE_AUTO=True,
        RECONCILE_INTERVAL_S=3600,  # never ran in this index: a periodic run is due
        RECONCILE_SETTLE_S=0,
        RECONCILE_MIN_GAP_S=0,
        MINIO_METRICS_INTERVAL_S=0,
    )
    for number in range(3):
        minio.put_object(bucket, f"old-{number}.bin", io.BytesIO(b"old"), 3)
    async with open_index(backend.url) as store:
        group = [
            AutoReconcile(
                settings,
                store,
                minio=lambda: minio_client(settings),
                buckets=lambda: {bucket: None},
                watch=None,
                lag=_no_lag,
                owner=f"process-{number}",
            )
            for number in range(2)
        ]
        await asyncio.gather(*(member.step() for member in group))
        # Both wanted the due run at once; one took the lease, the other stood back.
        assert sorted(member.stats.runs for member in group) == [0, 1]
        assert {row[0] for row in await index_rows(store, bucket)} == {
            f"old-{n}.bin" for n in range(3)
        }
        (lease,) = await store.jobs(bucket=LEASE_BUCKET)
        assert (lease.status.value, lease.sequencer) == ("done", f"{1:016X}")

        # A row the index lost (a tombstone newer than the object) by a removal before the
        # clean point is not this run's business; an object written since is.
        removed_at = datetime.now(UTC) - timedelta(hours=1)
        tombstone = event(
            EventKind.REMOVED, seq=2**64 - 1, bucket=bucket, key="old-0.bin", at=removed_at
        )
        await store.apply_batch([(tombstone, None)])
        minio.put_object(bucket, "new.bin", io.BytesIO(b"new"), 3)
        runner = group[0]
        runner.want(Reason.FAILED_EVENTS)
        decided = await runner.step()
        assert decided.run, decided.why
        assert decided.since is not None
        assert {row[0] for row in await index_rows(store, bucket)} == {
            "old-1.bin",
            "old-2.bin",
            "new.bin",
        }
        journal = await store.journal(bucket=bucket, key="new.bin")
        assert [entry.kind for entry in journal] == [EventKind.RECONCILED]


# Where MinIO keeps the Kafka target's entries in its queue_dir (one file each).
TARGET_QUEUE = f"minio-kafka-{NOTIFY_TARGET_ID}"


@pytest.fixture
def minio_with_an_empty_queue_entry(stack: StackEndpoints) -> Iterator[PrivateMinio]:
    """A MinIO of the test's own whose queue_dir holds, from its start, an empty entry
    named like its own (``<uuid>.event``): what a kill -9 inside MinIO's write of an
    entry leaves behind."""
    server = PrivateMinio(stack.values, stack.events_topic, queue_limit=100)
    assert server.queue_dir is not None
    target_queue = server.queue_dir / TARGET_QUEUE
    target_queue.mkdir(parents=True)
    (target_queue / f"{uuid.uuid4()}.event").touch()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_queue_minio_never_sends_does_not_hold_the_reconcile_up(
    stack: StackEndpoints,
    minio_with_an_empty_queue_entry: PrivateMinio,
    tmp_path: Path,
) -> None:
    server = minio_with_an_empty_queue_entry
    assert server.queue_dir is not None
    settle_s = 3.0
    settings = stack.settings(
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        MINIO_ENDPOINT=server.endpoint,
        RECONCILE_AUTO=True,
        RECONCILE_INTERVAL_S=0,
        RECONCILE_SETTLE_S=settle_s,
        RECONCILE_MIN_GAP_S=0,
        MINIO_METRICS_INTERVAL_S=1,
    )
    client = minio_client(settings)
    bucket = unique_name("stuck")
    client.make_bucket(bucket)
    client.put_object(bucket, "lost.bin", io.BytesIO(b"no event"), 8)  # none configured
    watch = QueueWatch(settings, lambda: NOTIFY_TARGET_ID)
    async with open_index(settings.index_url) as store:
        runner = AutoReconcile(
            settings,
            store,
            minio=lambda: client,
            buckets=lambda: {bucket: None},
            watch=watch,
            lag=_no_lag,
            owner="process-0",
        )
        runner.want(Reason.MINIO_RESTART)
        decided = await runner.step()
        deadline = time.monotonic() + 30
        # Without a queue that does not move counting as MinIO's own, this waits for ever:
        # the entry is never sent, so the queue never empties.
        while not decided.run:
            assert time.monotonic() < deadline, decided.why
            await asyncio.sleep(1)
            decided = await runner.step()
        assert watch.unchanged_s >= settle_s
        assert watch.latest is not None
        assert watch.latest.queue_length == 1
        assert runner.stats.minio_unsent
        assert {row[0] for row in await index_rows(store, bucket)} == {"lost.bin"}
    # MinIO's send loop (every 3 s) went over the entry and left it where it was.
    (entry,) = (server.queue_dir / TARGET_QUEUE).iterdir()
    assert entry.stat().st_size == 0
