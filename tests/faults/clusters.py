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
from collections import Counter, deque
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
    """A fail-fast client of one MinIO node."""
    http = urllib3.PoolManager(
        # A short read timeout: a request stuck on a locked key must not hold up the others
        # for long (the uploads are small).
        timeout=urllib3.Timeout(connect=2.0, read=5.0),
        retries=urllib3.Retry(total=0),
    )
    return Minio(
        endpoint,
        access_key=values["MINIO_ACCESS_KEY"],
        secret_key=values["MINIO_SECRET_KEY"],
        secure=False,
        http_client=http,
    )


# How soon a key whose request failed is tried again.
HELD_RETRY_S = 5.0


@dataclass
class SpreadUploader(Uploader):
    """An uploader whose requests go to the nodes in turn, as behind a round-robin load
    balancer. When a request fails, its key's operations wait (in their order) and are
    tried again every HELD_RETRY_S on the next node, while other keys go on: a key whose
    write the killed node was serving stays locked until MinIO lets the dead node's lock
    expire. ``by_node`` counts the acknowledged requests per node, ``held_s`` how long
    each held key waited."""

    nodes: list[tuple[str, Minio]] = field(default_factory=list)
    by_node: Counter[str] = field(default_factory=Counter)
    held_s: dict[str, float] = field(default_factory=dict)
    # The node a request is in flight to (None between requests): a scenario kills a node
    # mid-request with it.
    in_flight: str | None = None
    # When each request was acknowledged (time.monotonic()), in order.
    acknowledged_at: list[float] = field(default_factory=list)
    _turn: int = 0

    def first_acknowledged_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first acknowledgement after it (None: none yet)."""
        later = [at for at in self.acknowledged_at if at > moment]
        return later[0] - moment if later else None

    def _run(self) -> None:
        try:
            self._run_ops()
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def _run_ops(self) -> None:
        waiting = deque(self.ops)
        held: dict[str, deque[Op]] = {}  # key → its operations not done yet, in order
        retry_at: dict[str, float] = {}
        failed_at: dict[str, float] = {}
        while (waiting or held) and not self._abort.is_set():
            now = time.monotonic()
            due = [key for key in held if retry_at[key] <= now]
            if due:
                key = due[0]
                if self._attempt(held[key][0]):
                    held[key].popleft()
                    retry_at[key] = now  # the key's next operation right away
                    if not held[key]:
                        del held[key]
                        self.held_s[key] = time.monotonic() - failed_at[key]
                else:
                    assert now - failed_at[key] < self.op_deadline_s, f"{key!r} held too long"
                    retry_at[key] = time.monotonic() + HELD_RETRY_S
            elif waiting:
                op = waiting.popleft()
                if op.key in held:
                    held[op.key].append(op)
                elif self._attempt(op):
                    time.sleep(self.pace_s)
                else:
                    held[op.key] = deque([op])
                    failed_at[op.key] = now
                    retry_at[op.key] = time.monotonic() + HELD_RETRY_S
            else:
                time.sleep(0.1)

    def _attempt(self, op: Op) -> bool:
        """One request of ``op`` to the next node; whether it was acknowledged."""
        endpoint, client = self.nodes[self._turn % len(self.nodes)]
        self._turn += 1
        self.in_flight = endpoint
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
            return False
        finally:
            self.in_flight = None
        self.by_node[endpoint] += 1
        self.acknowledged_at.append(time.monotonic())
        self.done.append(op)
        return True


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
