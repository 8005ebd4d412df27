"""Fault injection on the real stack: uploads keep flowing through MinIO while the
consumer is killed, a server goes away, or the events topic fills with poison and
replayed copies; afterwards every invariant of ``invariants.py`` must hold.

Each scenario is bounded (a fixed number of uploads, deadlines on every wait) and prints
its seed; ``FAULTS_SEED=<seed> pytest -m faults -k <scenario>`` replays its randomness.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from bench.private_minio import PrivateMinio
from consumer.index import JobStatus
from consumer.repair.compare import RECONCILE_AGENT_PRODUCT
from infra.stack import Stack, free_port
from tests.conftest import REPO_ROOT, StackEndpoints
from tests.faults.conftest import UPLOAD_TIMEOUT_S, Rig, RigFactory, outage, queued_events
from tests.faults.harness import (
    RawRecord,
    Uploader,
    bucket_of,
    plan_traffic,
    poison_messages,
    produce,
    read_range,
)
from tests.faults.invariants import Poison
from tests.helpers import commit_group

pytestmark = [pytest.mark.integration, pytest.mark.faults]

UPLOADS = 150  # per scenario
KILLS = 4
# The kill -9 scenario's job lease: longer than the killed member's session (10 s), which
# the restarted consumer waits out before it gets partitions, so a killed runner's lease is
# still live then and the restarted one still has to wait for it (a few seconds).
KILL_LEASE_S = 15.0
# FAULTS_OUTAGE_S lengthens the Kafka and PostgreSQL outages for a longer drill.
OUTAGE_S = float(os.environ.get("FAULTS_OUTAGE_S", "20"))


async def _until_progress(uploader: Uploader, target: int, timeout_s: float = 60) -> None:
    """Wait until ``target`` uploads were acknowledged: the fault hits a busy system."""
    deadline = time.monotonic() + timeout_s
    while uploader.progress < target:
        assert time.monotonic() < deadline, f"uploads stuck below {target}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
async def test_kill_9_of_the_consumer_at_random_moments(make_rig: RigFactory) -> None:
    # A killed consumer's claimed jobs keep its lease until it expires, and the restarted
    # one waits that long before it runs them: a short lease keeps that wait and takeover
    # (and all it checks) without the default's 120 s of it. Safe here: only one consumer
    # runs at a time, so no live runner can lose its jobs to another.
    rig = await make_rig(env={"PROCESSING_LEASE_S": str(KILL_LEASE_S)})
    uploader = rig.uploader(plan_traffic(rig.rng, UPLOADS), pace_s=0.3)
    rig.consumer.start()
    uploader.start()
    # Kills only while uploads go on: an upload after the last kill guarantees the
    # restarted consumer has work, so waiting for it to work cannot hang.
    while rig.consumer.kills < KILLS and uploader.running:
        # A restarted consumer gets its partitions only once the killed member's session
        # has expired: wait until this one works, then kill it at a random moment.
        await _until_working(rig)
        await asyncio.sleep(rig.rng.uniform(0.0, 1.5))
        await asyncio.to_thread(rig.consumer.kill9)
        rig.consumer.start()
    await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
    assert rig.consumer.kills >= KILLS - 1, f"only {rig.consumer.kills} kills during the uploads"
    await rig.converge()
    await rig.finish(crashes=True)


async def _until_working(rig: Rig, timeout_s: float = 60) -> None:
    """Until the running consumer has journaled an event or finished a job."""

    async def work_done() -> int:
        journal = (await rig.store.counts())["journal"]
        return journal + len(await rig.store.jobs(bucket=rig.bucket, status=JobStatus.DONE))

    before = await work_done()
    deadline = time.monotonic() + timeout_s
    while await work_done() == before:
        rig.consumer.assert_alive()
        assert time.monotonic() < deadline, "the restarted consumer did nothing"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_kafka_stopped_for_20_s_minio_queues_the_events(
    make_rig: RigFactory, stack_control: Stack
) -> None:
    rig = await make_rig()
    uploader = rig.uploader(plan_traffic(rig.rng, UPLOADS), pace_s=0.15)
    queue = stack_control.state_dir / "minio" / "queue"
    rig.consumer.start()
    uploader.start()
    await _until_progress(uploader, 20)
    # The outage hits a consumer that is consuming, not one still starting (a slow start
    # on a busy machine would make this the outage-at-start scenario below).
    await _until_working(rig)
    async with outage(stack_control, "kafka"):
        stopped_at, before = time.monotonic(), uploader.progress
        # MinIO keeps accepting uploads and holds their events in its queue_dir.
        while not queued_events(queue):
            assert time.monotonic() - stopped_at < OUTAGE_S, "MinIO queued no event"
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
        assert uploader.progress > before, "uploads stalled while Kafka was down"
    await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
    await rig.converge()  # which waits for MinIO's queue to drain into Kafka
    await rig.finish()


START_UPLOADS = 60


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_kafka_stopped_before_the_consumer_connects_is_waited_out(
    make_rig: RigFactory, stack_control: Stack
) -> None:
    rig = await make_rig()
    uploader = rig.uploader(plan_traffic(rig.rng, START_UPLOADS), pace_s=0.1)
    async with outage(stack_control, "kafka"):
        # Kafka is down before the consumer exists: its first connection meets the outage.
        rig.consumer.start()
        uploader.start()
        # Both roles try again and again (not once) and stay up; MinIO queues the events.
        await _until_retried(rig, "Kafka start", times=4)
        while not queued_events(rig.queue_dir):
            assert uploader.running, "uploads ended before MinIO queued an event"
            await asyncio.sleep(0.2)
        rig.consumer.assert_alive()
    await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
    await rig.converge()  # every queued event indexed and processed once Kafka is back
    await rig.finish()


async def _until_retried(rig: Rig, what: str, times: int, timeout_s: float = 90) -> None:
    """Until the consumer has logged ``times`` retries of ``what`` (all roles together)."""
    deadline = time.monotonic() + timeout_s

    def retries() -> int:
        events = rig.consumer.log_events()
        return sum(1 for e in events if e.get("event") == "retrying" and e.get("what") == what)

    while retries() < times:
        rig.consumer.assert_alive()
        assert time.monotonic() < deadline, f"{retries()} retries of {what!r} in {timeout_s} s"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
async def test_minio_stopped_then_restarted_uploads_retry(
    make_rig: RigFactory, stack_control: Stack
) -> None:
    # A request MinIO takes while it stops may be written without its event
    # (minio/minio#18404; a CI run saw two). The consumer sees MinIO's start time move
    # and reconciles the bucket by itself: the index must equal the bucket, with no
    # reconcile run by hand.
    rig = await make_rig(auto_reconcile=True)
    uploader = rig.uploader(plan_traffic(rig.rng, UPLOADS), pace_s=0.08)
    rig.consumer.start()
    # The restart is seen against a reading from before it: a consumer slow to start on a
    # busy machine would otherwise first read MinIO after the restart, and see none.
    await rig.until_logged("watching MinIO's queue")
    uploader.start()
    await _until_progress(uploader, 30)
    async with outage(stack_control, "minio"):
        await asyncio.sleep(10)
    restarted_at = time.monotonic()
    await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
    assert uploader.failed_attempts > 0, "no upload noticed that MinIO was down"
    run = await rig.until_auto_reconciled("minio_restart")
    await rig.converge()
    repaired = await _reconciled_messages(rig)
    print(
        f"MinIO restart → automatic reconcile done {run['at'] - restarted_at:.1f} s,"
        f" → index equals the bucket {time.monotonic() - restarted_at:.1f} s;"
        f" run: {run['event']}; {repaired} object(s) repaired and queued for processing"
    )
    await rig.finish()


async def _reconciled_messages(rig: Rig) -> int:
    """Repairs the reconcile queued for processing: its messages about the bucket."""
    records = await read_range(rig.bootstrap, rig.topic, rig.start)
    return sum(
        1
        for record in records
        if bucket_of(record) == rig.bucket
        and RECONCILE_AGENT_PRODUCT.encode() in (record.value or b"")
    )


QUEUE_LIMIT = 20
OVERFLOW_UPLOADS = 70


@pytest.fixture
def small_queue_minio(stack: StackEndpoints) -> Iterator[PrivateMinio]:
    """A MinIO of the scenario's own whose queue for Kafka holds QUEUE_LIMIT events."""
    server = PrivateMinio(stack.values, stack.events_topic, queue_limit=QUEUE_LIMIT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
async def test_minio_drops_events_past_its_queue_limit_the_consumer_repairs(
    small_queue_minio: PrivateMinio, make_rig: RigFactory, stack_control: Stack
) -> None:
    port = free_port()
    env = {"HEALTH_PORT": str(port), "MINIO_QUEUE_DEGRADED_LENGTH": "5"}
    rig = await make_rig(auto_reconcile=True, private=small_queue_minio, env=env)
    ops = plan_traffic(rig.rng, OVERFLOW_UPLOADS)
    before = rig.uploader(ops[:10], pace_s=0.05)
    rig.consumer.start()
    before.start()
    await asyncio.to_thread(before.wait, UPLOAD_TIMEOUT_S)
    await _until_working(rig)
    await rig.until_logged("watching MinIO's queue")  # the drops rise against it
    async with outage(stack_control, "kafka"):
        during = rig.uploader(ops[10:], pace_s=0.03)
        during.start()
        overflow_at = await _until_queued(rig, QUEUE_LIMIT)
        await asyncio.to_thread(during.wait, UPLOAD_TIMEOUT_S)
        # The backlog and the drop, with their numbers, in the running consumer's status.
        queue = await _status_queue(rig, port, lambda q: q.get("failed_events", 0) > 0)
        assert queue["queue_length"] == QUEUE_LIMIT, queue
        table = await asyncio.to_thread(_status_table, rig)
        assert re.search(
            rf"^minio_queue +{QUEUE_LIMIT} events waiting \(VOXPERSONA\)$", table, re.M
        )
        assert re.search(rf"^minio_failed_events +{queue['failed_events']}$", table, re.M), table
        assert "MINIO_QUEUE_DEGRADED_LENGTH 5" in table, table
        dropped = queue["failed_events"]
    back_at = time.monotonic()
    run = await rig.until_auto_reconciled("failed_events")
    await rig.converge()
    done_at = time.monotonic()
    repaired = await _reconciled_messages(rig)
    print(
        f"MinIO dropped {dropped} events (queue_limit {QUEUE_LIMIT}); index equals the bucket"
        f" {done_at - overflow_at:.1f} s after the overflow, {done_at - back_at:.1f} s after"
        f" Kafka was back (the reconcile ended {run['at'] - back_at:.1f} s after);"
        f" run: {run['event']}; {repaired} object(s) queued for processing"
    )
    assert run["event"]["reindexed"] + run["event"]["tombstoned"] > 0, run
    await rig.finish()


async def _until_queued(rig: Rig, events: int, timeout_s: float = 60) -> float:
    """When MinIO's queue_dir first held ``events``: the moment it overflows."""
    deadline = time.monotonic() + timeout_s
    while queued_events(rig.queue_dir) < events:
        assert time.monotonic() < deadline, f"MinIO queued fewer than {events} events"
        await asyncio.sleep(0.05)
    return time.monotonic()


async def _status_queue(
    rig: Rig, port: int, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 60
) -> dict[str, Any]:
    """MinIO's queue in the running consumer's /status, once ``wanted`` holds (MinIO
    caches its metrics 10 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with httpx.AsyncClient(timeout=45) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/status")
        queue: dict[str, Any] = answer.json().get("minio_queue") or {}
        if wanted(queue):
            return queue
        assert time.monotonic() < deadline, f"status never showed it: {queue}"
        await asyncio.sleep(1)


def _status_table(rig: Rig) -> str:
    """``python -m consumer status`` as an operator runs it, beside the consumer."""
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "status"],
        env=rig.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_postgres_stopped_for_20_s_under_the_index(
    make_rig: RigFactory, stack_control: Stack
) -> None:
    rig = await make_rig()
    # Uploads paced to outlast the outage: 20 before it, ~80 during its 20 s, the rest
    # after PostgreSQL is back (its stop is a fast shutdown, about a second). The uploads
    # set this scenario's length, so no slower than that.
    uploader = rig.uploader(plan_traffic(rig.rng, UPLOADS), pace_s=0.2)
    rig.consumer.start()
    uploader.start()
    await _until_progress(uploader, 20)
    # Under a consumer at work, not one still starting (an outage at start is
    # tests/integration/test_outages.py's case).
    await _until_working(rig)
    async with outage(stack_control, "postgres"):
        before = uploader.progress
        await asyncio.sleep(OUTAGE_S)
        assert uploader.progress > before, "uploads stalled while PostgreSQL was down"
        rig.consumer.assert_alive()
    await rig.reopen_store()
    await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
    await rig.converge()
    await rig.finish()


POISON = 60


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_poison_flood_mixed_with_real_traffic(make_rig: RigFactory) -> None:
    rig = await make_rig()
    uploader = rig.uploader(plan_traffic(rig.rng, UPLOADS), pace_s=0.05)
    rig.consumer.start()
    uploader.start()
    template = await _first_event(rig.bootstrap, rig.topic, rig.start, rig.bucket)
    messages = poison_messages(template, rig.bucket, rig.rng, POISON)
    for burst in range(3):  # three floods while the real traffic flows
        chunk = messages[burst::3]
        positions = await produce(rig.bootstrap, rig.topic, chunk)
        rig.poison += [Poison(p, o, k, v) for (p, o), (k, v) in zip(positions, chunk, strict=True)]
        await asyncio.sleep(rig.rng.uniform(0.5, 2.0))
    await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
    await rig.converge()
    await rig.finish()


async def _first_event(
    bootstrap: str, topic: str, start: dict[int, int], bucket: str, timeout_s: float = 60
) -> dict[str, object]:
    """A real MinIO event about ``bucket`` (the poison's template)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_range(bootstrap, topic, start)
        for record in records:
            if bucket_of(record) == bucket and record.value:
                document: dict[str, object] = json.loads(record.value)
                return document
        assert time.monotonic() < deadline, "no event of the bucket arrived"
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("backend_name", ["sqlite"])
@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
async def test_replay_duplicated_and_out_of_order(make_rig: RigFactory, versioned: bool) -> None:
    rig = await make_rig(versioned=versioned)
    uploader = rig.uploader(plan_traffic(rig.rng, UPLOADS), pace_s=0.02)
    rig.consumer.start()
    uploader.start()
    await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
    await rig.converge()
    await rig.finish()

    # Copies of every real message, twice and shuffled, then both groups rewound to the
    # scenario's start: the consumer sees everything again, three times, out of order.
    real: list[RawRecord] = [
        r
        for r in await read_range(rig.bootstrap, rig.topic, rig.start)
        if bucket_of(r) == rig.bucket
    ]
    copies = [(r.key, r.value) for r in real] * 2
    rig.rng.shuffle(copies)
    await produce(rig.bootstrap, rig.topic, copies)
    for group in (rig.group, rig.processor_group):
        await commit_group(rig.bootstrap, group, rig.topic, rig.start)
    rig.consumer.start()
    await rig.converge()
    await rig.finish()
