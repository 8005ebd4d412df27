"""Kafka as users run it: three KRaft brokers, every topic replicated three times and a
write acknowledged by two of them. Uploads flow through a MinIO whose notify target is the
cluster while the leader of the busiest events partition is killed with -9; the consumer
(its bootstrap: all three brokers) must carry on with the new leader, and afterwards every
invariant holds: nothing lost, nothing doubled, each key at its latest write, no paid
transcription run twice. The scenario prints how long the consumer took to resume.

A separate, slower part of the fault suite (``-m cluster``): three JVMs start once per
module, before the scenario's clock.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator

import pytest
from minio import Minio

from consumer.minio import minio_client
from infra.stack.cluster import REPLICATION_FACTOR, KafkaCluster, MinioCluster
from infra.stack.state import Credentials
from tests.conftest import StackEndpoints
from tests.faults.clusters import (
    cluster_endpoints,
    index_follows_the_latest_event_of_each_key,
    keys_out_of_order,
    seconds_until_indexed_after,
)
from tests.faults.conftest import UPLOAD_TIMEOUT_S, RigFactory
from tests.faults.harness import plan_traffic, read_range
from tests.helpers import topic_end_offsets
from tests.transcription_server import StandIn

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster]

EVENTS_TOPIC = "minio-events"
EVENTS_PARTITIONS = 3
UPLOADS = 120
# How long the killed broker stays down: past its session timeout (the controller
# fences it and moves its leaderships), as a crashed machine would.
DOWN_S = 15.0


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    root = tmp_path_factory.mktemp("kafka-cluster")
    started = time.monotonic()
    with KafkaCluster(root) as cluster:
        cluster.create_topic(EVENTS_TOPIC, EVENTS_PARTITIONS)
        cluster.wait_until("events topic in sync", lambda: cluster.fully_in_sync(EVENTS_TOPIC), 60)
        print(f"Kafka cluster of 3 KRaft nodes ready in {time.monotonic() - started:.1f} s")
        yield cluster
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def single_minio(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MinioCluster]:
    """One MinIO server publishing to the Kafka cluster (every broker its bootstrap)."""
    root = tmp_path_factory.mktemp("minio-for-kafka-cluster")
    credentials = Credentials.generate()
    brokers = kafka_cluster.bootstrap
    with MinioCluster(root, credentials, brokers=brokers, topic=EVENTS_TOPIC, nodes=1) as minio:
        yield minio
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(kafka_cluster: KafkaCluster, single_minio: MinioCluster) -> StackEndpoints:
    """This module's stack: the Kafka cluster and its MinIO."""
    return cluster_endpoints(
        single_minio,
        bootstrap=kafka_cluster.bootstrap,
        topic=EVENTS_TOPIC,
        dlq="unused-dlq",  # each scenario has a DLQ topic of its own (make_rig)
        topic_replicas=REPLICATION_FACTOR,
    )


@pytest.fixture(scope="module")
def minio(stack: StackEndpoints) -> Minio:
    return minio_client(stack.settings())


# Over the suite's 300 s per test: the cluster's start counts toward it, and takes longer
# while the whole suite shares the machine's two cores.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_leader_of_a_busy_partition_killed_9_under_traffic(
    make_rig: RigFactory, kafka_cluster: KafkaCluster, single_minio: MinioCluster
) -> None:
    with StandIn() as api:
        rig = await make_rig(
            processors=("audio-probe", "transcribe"),
            env={"TRANSCRIBE_BASE_URL": api.base_url},
        )
        rig.queue_dir = single_minio.queue_root  # converge waits for it to drain
        uploader = rig.uploader(plan_traffic(rig.rng, UPLOADS), pace_s=0.15)
        rig.consumer.start()
        uploader.start()
        while uploader.progress < UPLOADS // 3:
            assert uploader.running, "uploads ended early"
            await asyncio.sleep(0.1)

        # The busiest partition so far, and its leader: killed mid-traffic.
        ends = await topic_end_offsets(rig.bootstrap, rig.topic)
        busiest = max(ends, key=lambda p: ends[p] - rig.start.get(p, 0))
        described = await asyncio.to_thread(kafka_cluster.partitions, rig.topic)
        leader = described[busiest]["leader"]
        killed_at = time.monotonic()
        await asyncio.to_thread(kafka_cluster.node(leader).kill9)
        print(f"killed broker {leader}, leader of partition {busiest} (ends {ends})")

        def new_leader() -> bool:
            described = kafka_cluster.partitions(rig.topic).get(busiest, {})
            return described.get("leader", leader) not in (leader, -1)

        elected_s = await asyncio.to_thread(
            kafka_cluster.wait_until, "a new leader", new_leader, 60
        )
        resumed_s = await seconds_until_indexed_after(rig.store, rig.bucket, ends, killed_at)
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - killed_at)))
        await asyncio.to_thread(kafka_cluster.node(leader).start)
        await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
        insync_s = await asyncio.to_thread(
            kafka_cluster.wait_until,
            "the restarted broker back in sync",
            lambda: kafka_cluster.fully_in_sync(rig.topic),
            90,
        )
        await rig.converge()
        records = await read_range(rig.bootstrap, rig.topic, rig.start)
        await index_follows_the_latest_event_of_each_key(rig.store, rig.bucket, records)
        await rig.finish()
        billed = api.requests_by_file()
        assert billed, "no transcription was requested"
        assert set(billed.values()) == {1}, f"transcribed more than once: {billed}"
        print(
            f"kafka cluster: new leader elected {elected_s:.1f} s after the kill; the"
            f" consumer indexed new events again {resumed_s:.1f} s after it; restarted"
            f" broker in sync {insync_s:.1f} s after its start; {uploader.failed_attempts}"
            f" refused uploads; keys whose events the topic holds out of order:"
            f" {keys_out_of_order(records, rig.bucket)}"
        )
