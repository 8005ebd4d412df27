"""MinIO as users run it when one server is not enough: four nodes (127.0.0.1-127.0.0.4,
one drive each, erasure coded over all four), each publishing the events of the requests
it serves to the stack's Kafka through a queue_dir of its own. Uploads are spread over
the nodes while one of them is killed with -9, with a request to it in flight, and
started again.

What the kill costs the uploads: the key whose write the dead node was serving stays
locked for 1-2 minutes (MinIO lets a dead node's lock expire after lockValidityDuration,
1 min, checked every minute; measured 108 s), so its retries fail meanwhile; every other
key goes on through the other three nodes. The uploader holds such a key (its later
operations in order) and goes on with the rest.

What the kill costs the index, all of it MinIO's doing, repaired by the consumer's own
automatic reconcile (its trigger: the restarted node's start time, read from the
cluster's metrics through node 1), with no reconcile by hand:

* a request the node was serving when it died may be written without its event
  (minio/minio#18404);
* an entry the node was writing into its queue_dir when it died is left empty: MinIO
  never sends it nor removes it, so the cluster's queue length stays above 0 for good
  (the reconcile stops waiting for a queue that does not move);
* an object whose delete was acknowledged and published while the node was down can come
  back with the node (an undone delete): the bucket is the truth, and the repair wins
  over the removal the index holds.

Events the node had queued but not yet sent are sent after its restart. The index must
end equal to the bucket for every key, nothing doubled, each key at its latest write, no
paid transcription run twice; the scenario prints how long the consumer took to index
new events after the kill and to repair what the kill cost.

A separate, slower part of the fault suite (``-m cluster``): the four nodes start once
per module, before the scenario's clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from minio import Minio

from consumer.events import RECONCILE_FOUND
from infra.stack import Credentials
from infra.stack.cluster import MinioCluster
from tests.conftest import StackEndpoints
from tests.faults.clusters import (
    SpreadUploader,
    index_follows_the_latest_event_of_each_key,
    node_client,
    seconds_until_indexed_after,
)
from tests.faults.conftest import (
    UPLOAD_TIMEOUT_S,
    Rig,
    RigFactory,
    empty_queue_entries,
    queue_files,
    queued_events,
)
from tests.faults.harness import (
    RawRecord,
    expected_objects,
    plan_traffic,
    read_range,
    uploader_client,
)
from tests.faults.invariants import PublishedEvent, published_events
from tests.helpers import bucket_listing, topic_end_offsets
from tests.transcription_server import StandIn

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.cluster,
    pytest.mark.minio_cluster,
]

UPLOADS = 150
KILLED_NODE = 3  # not node 1: the consumer, the checks and reconcile talk to node 1
DOWN_S = 10.0
# The automatic reconcile runs once the uploads (held keys: up to 2 min) are done and
# MinIO's queue has settled; the wait starts after the uploads.
RECONCILE_WAIT_S = 120.0
UNSENT = "MinIO holds events it does not send"


@pytest.fixture(scope="module")
def minio_cluster(
    stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MinioCluster]:
    """Four MinIO nodes with the session MinIO's credentials, publishing to the session's
    Kafka."""
    root = tmp_path_factory.mktemp("minio-cluster")
    credentials = dataclasses.replace(
        Credentials.generate(),
        minio_access_key=stack.values["MINIO_ACCESS_KEY"],
        minio_secret_key=stack.values["MINIO_SECRET_KEY"],
    )
    brokers = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    started = time.monotonic()
    with MinioCluster(root, credentials, brokers=brokers, topic=stack.events_topic) as cluster:
        print(f"MinIO cluster of 4 nodes ready in {time.monotonic() - started:.1f} s")
        yield cluster
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def minio(minio_cluster: MinioCluster) -> Minio:
    """This module's MinIO (buckets, checks): the cluster, through node 1."""
    values = minio_cluster.values()
    return Minio(
        values["MINIO_ENDPOINT"],
        access_key=values["MINIO_ACCESS_KEY"],
        secret_key=values["MINIO_SECRET_KEY"],
        secure=False,
    )


# Over the suite's 300 s per test: the cluster's start counts toward it, and takes longer
# while the whole suite shares the machine's two cores.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_a_node_killed_9_and_restarted_under_spread_uploads(
    make_rig: RigFactory, minio_cluster: MinioCluster
) -> None:
    with StandIn() as api:
        rig = await make_rig(
            processors=("audio-probe", "transcribe"),
            # The consumer reaches the cluster through node 1, its metrics too.
            env={"TRANSCRIBE_BASE_URL": api.base_url, **minio_cluster.values()},
            auto_reconcile=True,
        )
        rig.queue_dir = minio_cluster.queue_root  # converge waits for every node's queue
        values = minio_cluster.values()
        nodes = [(a.endpoint, node_client(a.endpoint, values)) for a in minio_cluster.addresses]
        uploader = SpreadUploader(
            uploader_client(values),
            rig.bucket,
            plan_traffic(rig.rng, UPLOADS),
            pace_s=0.1,
            # MinIO frees a dead node's lock on a key after 1-2 min (lockValidityDuration).
            op_deadline_s=180,
            nodes=nodes,
        )
        rig.uploaders.append(uploader)
        rig.consumer.start()
        # The restart is seen against a reading of the cluster's metrics from before it.
        await rig.until_logged("watching MinIO's queue")
        uploader.start()
        while uploader.progress < UPLOADS // 3:
            assert uploader.running, "uploads ended early"
            await asyncio.sleep(0.1)

        # Killed while a request to it is in flight (if one comes within 10 s): that
        # request's write may land without its event.
        victim = minio_cluster.addresses[KILLED_NODE - 1].endpoint
        for _ in range(2000):  # 10 s at most
            if uploader.in_flight == victim:
                break
            await asyncio.sleep(0.005)
        hit = uploader.in_flight == victim
        killed_at = time.monotonic()
        await asyncio.to_thread(minio_cluster.nodes[KILLED_NODE - 1].kill9)
        print(f"killed node {KILLED_NODE} with a request to it in flight: {hit}")
        # Resumed: an event published after the kill is indexed.
        ends = await topic_end_offsets(rig.bootstrap, rig.topic)
        resumed_s = await seconds_until_indexed_after(rig.store, rig.bucket, ends, killed_at)
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - killed_at)))
        restarted_at, restarted_wall = time.monotonic(), datetime.now(UTC)
        await asyncio.to_thread(minio_cluster.nodes[KILLED_NODE - 1].start)
        back_s = await asyncio.to_thread(
            minio_cluster.wait_until,
            "the restarted node ready",
            lambda: minio_cluster.ready(KILLED_NODE),
            60,
        )
        queues = [minio_cluster.node_home(n) / "queue" for n in range(1, 5)]
        assert all(queue.is_dir() for queue in queues), "a node without its own queue_dir"
        entries = await asyncio.to_thread(queued_events, rig.queue_dir)
        empty = await asyncio.to_thread(empty_queue_entries, rig.queue_dir)
        print(f"after the restart: {entries} entries to send, left empty: {empty}")
        await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
        uploaded_at = time.monotonic()
        # The consumer repairs by itself what the kill cost: no reconcile by hand.
        run = await rig.until_auto_reconciled("minio_restart", timeout_s=RECONCILE_WAIT_S)
        await rig.converge()  # the index equals the bucket, every key
        repaired_s, settled_s = time.monotonic() - restarted_at, time.monotonic() - uploaded_at
        print(f"after the repair, {queue_files(rig.queue_dir)}")
        unsent = [e for e in rig.consumer.log_events() if e.get("event") == UNSENT]
        print(f"the consumer said MinIO holds events it does not send: {unsent}")
        records = await read_range(rig.bootstrap, rig.topic, rig.start)
        await index_follows_the_latest_event_of_each_key(rig.store, rig.bucket, records)
        # A request that failed around the kill may still have landed: the bucket is not
        # held against the acknowledged requests for such keys (the index is, for all).
        rig.unsettled = frozenset(uploader.errors) | minio_disagrees(rig, uploader)
        print(f"keys MinIO settled otherwise than acknowledged: {sorted(rig.unsettled)}")
        undone = sorted(undone_deletes(rig, records))
        print(f"deletes MinIO acknowledged, published and then undid: {undone}")
        await rig.finish()
        again = await asyncio.to_thread(rig.reconcile, repair=False)
        assert again == [], f"differences left after the automatic repair: {again}"
        billed = api.requests_by_file()
        assert billed, "no transcription was requested"
        assert set(billed.values()) == {1}, f"transcribed more than once: {billed}"
        stalled_s = uploader.first_acknowledged_after(killed_at)
        repairs = run["event"]
        reconciled_s = (
            datetime.fromisoformat(repairs["timestamp"]) - restarted_wall
        ).total_seconds()
        print(
            f"minio cluster: first upload acknowledged {stalled_s:.1f} s after the kill"
            f" (node restarted after {restarted_at - killed_at:.1f} s)"
        )
        print(
            f"minio cluster: node {KILLED_NODE} killed; the consumer indexed an event"
            f" published after the kill {resumed_s:.1f} s after it; the node was ready"
            f" {back_s:.1f} s after its restart; the automatic reconcile ended"
            f" {reconciled_s:.1f} s after the restart (missing"
            f" {repairs.get('missing')}, stale {repairs.get('stale')}, extra"
            f" {repairs.get('extra')}, queued {repairs.get('queued_for_processing')});"
            f" index equal to the bucket {repaired_s:.1f} s after the restart"
            f" ({settled_s:.1f} s after the last upload);"
            f" acknowledged requests per node {dict(uploader.by_node)};"
            f" {uploader.failed_attempts} refused attempts; keys held after a failed request"
            f" and how long (s): {uploader.held_s}"
        )


def minio_disagrees(rig: Rig, uploader: SpreadUploader) -> frozenset[str]:
    """The keys whose object in the bucket is not what the acknowledged requests left."""
    expected = {(k, "", size, etag) for k, (size, etag) in expected_objects(uploader.done).items()}
    actual = bucket_listing(rig.minio, rig.bucket, versions=False)
    return frozenset(row[0] for row in expected ^ actual)


def undone_deletes(rig: Rig, records: list[RawRecord]) -> frozenset[str]:
    """Keys in the bucket whose latest event MinIO published (by sequencer) is a removal:
    a delete it acknowledged, published and then undid (the restarted node had missed it).
    The index must follow the bucket for them too."""
    latest: dict[str, PublishedEvent] = {}
    for event in published_events(records, rig.bucket):
        if event.name == RECONCILE_FOUND:  # the consumer's repair, not MinIO's event
            continue
        if event.key not in latest or event.sequencer > latest[event.key].sequencer:
            latest[event.key] = event
    removed = {k for k, e in latest.items() if e.name.startswith("s3:ObjectRemoved:")}
    listed = {row[0] for row in bucket_listing(rig.minio, rig.bucket, versions=False)}
    return frozenset(removed & listed)
