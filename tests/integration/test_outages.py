"""Servers going away under the indexer: PostgreSQL stopped during uploads, or before
the consumer first connects.

The index database is stopped for real (its process group, through infra/stack) while
objects keep arriving in MinIO and Kafka. Nothing may be committed past the first event the
indexer could not write; after the server returns, everything is indexed, each event
journaled once, and the offsets move past all of it.
"""

from __future__ import annotations

import asyncio
import functools
import io
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio

from consumer.index import ObjectQuery, open_index
from consumer.indexer import Indexer
from infra.stack import Stack
from tests.conftest import Backend, StackEndpoints, unique_name
from tests.faults.harness import ConsumerProcess
from tests.helpers import (
    KafkaRecord,
    Published,
    commit_group,
    committed_offsets,
    topic_end_offsets,
    until,
    until_async,
)
from tests.integration.test_cli_e2e import cli_env

pytestmark = pytest.mark.integration


def _put(minio: Minio, bucket: str, key: str) -> None:
    body = key.encode()
    minio.put_object(bucket, key, io.BytesIO(body), len(body), content_type="audio/ogg")


def _first_offsets(records: list[KafkaRecord]) -> dict[int, int]:
    """Per partition, the lowest offset among ``records``."""
    first: dict[int, int] = {}
    for record in records:
        first[record.partition] = min(first.get(record.partition, record.offset), record.offset)
    return first


def _next_offsets(records: list[KafkaRecord]) -> dict[int, int]:
    """Per partition, one past the highest offset among ``records``."""
    after: dict[int, int] = {}
    for record in records:
        after[record.partition] = max(after.get(record.partition, 0), record.offset + 1)
    return after


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_postgres_stopped_during_uploads_then_everything_indexed(
    stack: StackEndpoints,
    stack_control: Stack,
    minio: Minio,
    make_bucket: Callable[..., str],
    backend: Backend,
) -> None:
    bucket = make_bucket("pgdown")
    settings = stack.settings(INDEX_URL=backend.url, MINIO_RETRY_BACKOFF=0.4)
    bootstrap = settings.kafka_bootstrap_servers
    topic = settings.kafka_events_topic
    partitions = settings.kafka_events_partitions
    group = unique_name("g")
    published = Published(stack)

    await published.mark()
    before = [f"before/{n}.ogg" for n in range(3)]
    for key in before:
        _put(minio, bucket, key)
    before_records = await published.wait(bucket, len(before))

    store = open_index(backend.url)
    await store.start()
    indexer = Indexer(settings, store, group_id=group)
    task = asyncio.create_task(indexer.run())
    postgres_down = False
    try:

        async def indexed_keys() -> set[str]:
            return {r.key for r in await store.list_objects(ObjectQuery(bucket=bucket))}

        async def committed_past(records: list[KafkaRecord]) -> bool:
            done = await committed_offsets(bootstrap, group, topic, partitions)
            return all(done.get(p, 0) >= o for p, o in _next_offsets(records).items())

        await until_async(
            lambda: committed_past(before_records), "events before the outage not committed"
        )
        assert await indexed_keys() == set(before)

        await asyncio.to_thread(stack_control.stop_server, "postgres")
        postgres_down = True
        batches_before_outage = indexer.stats.batches
        await published.mark()
        during = [f"during/{n}.ogg" for n in range(6)]
        for key in during:
            _put(minio, bucket, key)
        gap = await published.wait(bucket, len(during))
        await until(lambda: indexer.stats.fetch_pauses >= 1, "the indexer never hit the outage")
        await asyncio.sleep(1.5)  # several retries while the server is down

        assert indexer.stats.batches == batches_before_outage, "a batch counted as indexed"
        committed = await committed_offsets(bootstrap, group, topic, partitions)
        for partition, first_unwritten in _first_offsets(gap).items():
            assert committed.get(partition, 0) <= first_unwritten, (
                f"partition {partition} committed to {committed.get(partition)} past the gap"
                f" starting at {first_unwritten}"
            )

        await asyncio.to_thread(stack_control.start_server, "postgres")
        postgres_down = False

        async def all_indexed() -> bool:
            return await indexed_keys() == set(before + during)

        await until_async(all_indexed, "objects not indexed after PostgreSQL returned", 60)
        await until_async(lambda: committed_past(gap), "offsets not committed after the outage")
        journal = await store.journal(bucket=bucket, limit=1000)
        identities = [(j.key, j.event_name, j.sequencer) for j in journal]
        assert sorted(identities) == sorted(set(identities)), "an event journaled twice"
        assert {j.key for j in journal} == set(before + during)
        assert len(journal) == len(before) + len(during)
    finally:
        if postgres_down:
            await asyncio.to_thread(stack_control.start_server, "postgres")
        indexer.stop()
        await asyncio.wait_for(task, timeout=60)
        await store.close()


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_postgres_down_when_the_consumer_starts_is_waited_out(
    stack: StackEndpoints,
    stack_control: Stack,
    minio: Minio,
    make_bucket: Callable[..., str],
    backend: Backend,
    tmp_path: Path,
) -> None:
    """An index outage that began before the consumer's first connection is waited out
    like one later in its run: ``run --role all`` stays up, trying again, and indexes what
    arrived meanwhile once PostgreSQL is back (it used to exit 1 at once); one stopped
    while it waits exits 0."""
    bucket = make_bucket("pgstart")
    group = unique_name("g")
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    ends = await topic_end_offsets(bootstrap, stack.events_topic)
    for name in (group, f"{group}-processor"):  # only this test's events are read
        await commit_group(bootstrap, name, stack.events_topic, ends)
    env = cli_env(stack, tmp_path, group) | {
        "INDEX_URL": backend.url,
        "INDEX_RETRY_BACKOFF_S": "0.2",
        "MINIO_CLEANUP_DAYS": "0",
    }
    consumer = ConsumerProcess(env, tmp_path / "consumer", role="all")
    # Another one, of its own group, that is stopped while it waits.
    quitter = ConsumerProcess(
        env | {"KAFKA_GROUP_ID": unique_name("q")}, tmp_path / "quitter", role="indexer"
    )
    store = open_index(backend.url)
    postgres_down = False
    try:
        await asyncio.to_thread(stack_control.stop_server, "postgres")
        postgres_down = True
        consumer.start()
        quitter.start()
        _put(minio, bucket, "during.ogg")  # MinIO and Kafka keep its event meanwhile

        async def retried_alive(process: ConsumerProcess, times: int) -> bool:
            process.assert_alive()
            events = process.log_events()
            return sum(1 for e in events if e.get("what") == "index start") >= times

        for process in (consumer, quitter):
            await until_async(
                functools.partial(retried_alive, process, 3),
                f"{process.role} did not retry the index",
                60,
            )
        assert await asyncio.to_thread(quitter.stop) == 0, quitter.log_tail()
        assert "stopped before the index was reachable" in quitter.logs()
        consumer.assert_alive()

        await asyncio.to_thread(stack_control.start_server, "postgres")
        postgres_down = False
        await store.start()

        async def indexed() -> bool:
            consumer.assert_alive()
            return bool(await store.list_objects(ObjectQuery(bucket=bucket)))

        await until_async(indexed, "the event waiting in Kafka was not indexed", 90)
        assert await asyncio.to_thread(consumer.stop) == 0, consumer.log_tail()
    finally:
        if postgres_down:
            await asyncio.to_thread(stack_control.start_server, "postgres")
        consumer.close()
        quitter.close()
        await store.close()


def test_stop_and_start_one_server_from_the_command_line(stack_control: Stack) -> None:
    """The fault-drill verbs: `stop minio` leaves Kafka and PostgreSQL running, `start minio`
    brings it back on its old port (so clients' endpoints stay valid)."""
    endpoint = stack_control.env()["MINIO_ENDPOINT"]

    def stack_cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "infra.stack", *args]
        command += ["--state-dir", str(stack_control.state_dir)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    stopped = stack_cli("stop", "minio")
    try:
        assert stopped.returncode == 0, stopped.stderr
        status = stack_control.status()
        assert status["minio"] == "stopped"
        assert status["kafka"].startswith("running")
        assert status["postgres"].startswith("running")
        assert "was not running" in stack_cli("stop", "minio").stderr
    finally:
        started = stack_cli("start", "minio")
    assert started.returncode == 0, started.stderr
    assert stack_control.status()["minio"].startswith("running")
    assert stack_control.env()["MINIO_ENDPOINT"] == endpoint
    assert urllib.request.urlopen(f"http://{endpoint}/minio/health/ready").status == 200

    usage = stack_cli("stop")
    assert usage.returncode == 2
    assert "a server name goes with stop/start" in usage.stderr
