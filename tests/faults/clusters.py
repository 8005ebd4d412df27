"""What the distributed scenarios (test_kafka_cluster.py, test_minio_cluster.py) share: the
clusters of infra/stack/cluster.py as the ``stack`` the fault rig is built on, an uploader
that spreads its requests over MinIO's nodes, and the measures the scenarios report.

A scenario module overrides the session's ``stack`` and ``minio`` fixtures with its
cluster's (module scope: a cluster starts once per module), so ``make_rig`` and every
invariant of ``invariants.py`` run unchanged against the cluster.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import urllib3
from minio import Minio

from consumer.index import IndexStore, ObjectQuery
from infra.stack.cluster import MinioCluster
from tests.conftest import StackEndpoints
from tests.faults.harness import Op, RawRecord, Uploader, bucket_of

RESUME_TIMEOUT_S = 90.0


def cluster_endpoints(
    minio: MinioCluster, *, bootstrap: str, topic: str, dlq: str, topic_replicas: int
) -> StackEndpoints:
    """The rig's view of a cluster: MinIO's node 1 (any node serves every request), the
    brokers, the topics."""
    values = {
        **minio.values(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_EVENTS_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": dlq,
    }
    return StackEndpoints(values, "cluster", topic_replicas=topic_replicas)


def node_client(endpoint: str, values: Mapping[str, str]) -> Minio:
    """A fail-fast client of one MinIO node (as ``harness.uploader_client``)."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=15.0), retries=urllib3.Retry(total=0)
    )
    return Minio(
        endpoint,
        access_key=values["MINIO_ACCESS_KEY"],
        secret_key=values["MINIO_SECRET_KEY"],
        secure=False,
        http_client=http,
    )


@dataclass
class SpreadUploader(Uploader):
    """An uploader whose requests go to the nodes in turn, as behind a round-robin load
    balancer; a refused request is tried again on the next node. ``by_node`` counts the
    acknowledged requests per node."""

    nodes: list[tuple[str, Minio]] = field(default_factory=list)
    by_node: Counter[str] = field(default_factory=Counter)
    _turn: int = 0

    def _perform(self, op: Op) -> None:
        deadline = time.monotonic() + self.op_deadline_s
        while True:
            endpoint, client = self.nodes[self._turn % len(self.nodes)]
            self._turn += 1
            try:
                if op.kind == "put":
                    client.put_object(
                        self.bucket,
                        op.key,
                        io.BytesIO(op.body),
                        len(op.body),
                        content_type=op.content_type,
                    )
                else:
                    client.remove_object(self.bucket, op.key)
            except Exception as exc:
                self.failed_attempts += 1
                self.errors.setdefault(op.key, []).append(f"{endpoint}: {exc!r}"[:200])
                if time.monotonic() > deadline or self._abort.is_set():
                    raise
                time.sleep(0.2)
            else:
                self.by_node[endpoint] += 1
                return


async def seconds_until_indexed_after(
    store: IndexStore, bucket: str, ends: Mapping[int, int], since: float
) -> float:
    """Seconds from ``since`` (monotonic) until the index journaled an event read at or
    after ``ends`` (partition → the topic's end offset when the fault began): when the
    consumer was indexing new events again."""
    while True:
        for entry in await store.journal(bucket=bucket, limit=200):
            position = entry.kafka
            if position is not None and position.offset >= ends.get(position.partition, 1 << 62):
                return time.monotonic() - since
        assert time.monotonic() - since < RESUME_TIMEOUT_S, "the consumer did not resume"
        await asyncio.sleep(0.2)


def keys_out_of_order(records: list[RawRecord], bucket: str) -> list[str]:
    """Keys whose events the topic holds out of sequencer order (a write's event after a
    later write's): the consumer must still end at the latest write, by sequencer."""
    last: dict[str, int] = {}
    late: set[str] = set()
    for key, sequencer in _key_sequencers(records, bucket):
        if sequencer < last.get(key, -1):
            late.add(key)
        last[key] = max(sequencer, last.get(key, -1))
    return sorted(late)


async def index_follows_the_latest_event_of_each_key(
    store: IndexStore, bucket: str, records: list[RawRecord]
) -> None:
    """Per-key order kept: every live row carries the greatest sequencer published for its
    key, whatever order the events arrived in."""
    latest: dict[str, int] = {}
    for key, sequencer in _key_sequencers(records, bucket):
        latest[key] = max(sequencer, latest.get(key, -1))
    rows = await store.list_objects(ObjectQuery(bucket=bucket, limit=100_000))
    stale = [(r.key, r.sequencer) for r in rows if int(r.sequencer, 16) != latest.get(r.key)]
    assert not stale, f"rows not at their key's latest event: {stale[:5]}"


def _key_sequencers(records: list[RawRecord], bucket: str) -> list[tuple[str, int]]:
    """(key, sequencer) of MinIO's events about ``bucket``, in partition and offset order."""
    found = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if bucket_of(record) != bucket or record.value is None:
            continue
        document = json.loads(record.value)
        key = str(document["Key"]).split("/", 1)[1]
        found.append((key, int(document["Records"][0]["s3"]["object"]["sequencer"], 16)))
    return found
