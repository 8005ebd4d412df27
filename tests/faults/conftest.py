"""The fault suite's fixture: a ``Rig`` per scenario — a bucket wired to Kafka, a
versioned results bucket, a private DLQ topic, consumer groups that start at the events
topic's current end (so earlier tests' messages are not this scenario's business), the
consumer as a subprocess and the uploader thread. Everything it starts is stopped at
teardown, also when the scenario fails; servers a scenario stops are restarted by
``outage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio
from minio.commonconfig import ENABLED
from minio.versioningconfig import VersioningConfig

from bench.private_minio import PrivateMinio
from consumer.index import IndexStore, JobStatus, open_index
from consumer.minio import minio_client
from consumer.setup.notify_config import load_notify_config
from consumer.setup.provisioning import ensure_notifications
from infra.stack import NOTIFY_TARGET_ID, Stack
from tests.conftest import REPO_ROOT, Backend, StackEndpoints, unique_name
from tests.faults.harness import (
    ConsumerProcess,
    Op,
    Uploader,
    read_range,
    uploader_client,
)
from tests.faults.invariants import (
    Poison,
    Processing,
    check_all,
    index_matches_bucket,
    index_rows,
    published_events,
    state_from_events,
)
from tests.helpers import (
    Listing,
    bucket_listing,
    commit_group,
    committed_offsets,
    topic_end_offsets,
)
from tests.integration.test_cli_e2e import cli_env
from tests.toxiproxy import ToxiproxyClient, ToxiproxyServer

# Bounds of every scenario: the whole suite must stay a few minutes on 2 shared cores.
CONVERGE_TIMEOUT_S = 150.0
UPLOAD_TIMEOUT_S = 240.0
RECONCILE_TIMEOUT_S = 120.0
# How often ``converge`` looks again: a look costs under 0.1 s (measured), so a short
# interval ends the wait soon after the consumer caught up, at little load.
CONVERGE_POLL_S = 0.2
# The HTTP client's limit on /status: longer than a round of the consumer's checks.
STATUS_TIMEOUT_S = 40.0


def fault_seed() -> int:
    """FAULTS_SEED reruns a failed scenario's randomness; otherwise a fresh seed."""
    return int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(2**32))


@dataclass
class Rig:
    """One scenario's world: what it uploads to, the consumer it hurts, and the checks."""

    stack: StackEndpoints
    minio: Minio
    store: IndexStore
    store_url: str
    bucket: str
    results_bucket: str
    dlq_topic: str
    group: str
    versioned: bool
    start: dict[int, int]  # the events topic's ends when the scenario began
    consumer: ConsumerProcess
    rng: random.Random
    seed: int
    env: dict[str, str] = field(default_factory=dict, repr=False)  # holds secrets
    log_root: Path = Path()
    processing: Processing = field(default_factory=lambda: Processing(""))
    # More consumer processes of the scenario (scale-out), besides ``consumer``.
    others: list[ConsumerProcess] = field(default_factory=list)
    uploaders: list[Uploader] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    # MinIO stopped mid-request may lose that request's event (see events_lost_by_minio).
    minio_may_lose: int = 0
    # Keys with a request whose outcome is unknown (a node killed under it): the bucket
    # is not held against the acknowledged uploads for them (the index still is).
    unsettled: frozenset[str] = frozenset()
    # MinIO's queue_dir (local stack): events not yet delivered to Kafka wait there.
    queue_dir: Path | None = None
    # The objects whose event MinIO lost (set by ``finish``).
    lost: Listing = field(default_factory=set)

    @property
    def bootstrap(self) -> str:
        return self.stack.values["KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def topic(self) -> str:
        return self.stack.events_topic

    @property
    def processor_group(self) -> str:
        return f"{self.group}-processor"

    @property
    def processes(self) -> list[ConsumerProcess]:
        return [self.consumer, *self.others]

    def spawn(self, role: str) -> ConsumerProcess:
        """One more consumer process of ``role`` (started by the caller), with the same
        settings; stopped at teardown like ``consumer``."""
        process = ConsumerProcess(
            self.env, self.log_root / f"{role}-{len(self.others) + 1}", role=role
        )
        self.others.append(process)
        return process

    def owner_of(self, lease_owner: str) -> ConsumerProcess:
        """The process whose lease owner id this is (ids read "host:pid:nonce")."""
        pid = int(lease_owner.split(":")[-2])
        (process,) = [p for p in self.processes if p.pid == pid]
        return process

    def uploader(self, ops: list[Op], pace_s: float) -> Uploader:
        uploader = Uploader(uploader_client(self.stack.values), self.bucket, ops, pace_s)
        self.uploaders.append(uploader)
        return uploader

    @property
    def done(self) -> list[Op]:
        return [op for uploader in self.uploaders for op in uploader.done]

    async def converge(self, timeout_s: float = CONVERGE_TIMEOUT_S) -> None:
        """Wait until the consumer has caught up: both groups committed to the topic's
        end, the index equals the bucket, and no job is left unfinished."""
        deadline = time.monotonic() + timeout_s
        state = "not checked yet"
        while True:
            for process in self.processes:
                if process.wanted:
                    process.assert_alive()
            state = await self._lagging()
            if state == "":
                return
            if time.monotonic() > deadline:
                explained = await self._explain()
                raise AssertionError(
                    f"no convergence in {timeout_s} s (seed {self.seed}): {state}\n{explained}"
                    f"\n{queue_files(self.queue_dir)}"
                    f"\nconsumer log tail:\n{self.consumer.log_tail(10)}"
                )
            await asyncio.sleep(CONVERGE_POLL_S)

    async def _lagging(self) -> str:
        """What is still behind ("" once nothing is)."""
        queued = queued_events(self.queue_dir)
        if queued:
            return f"{queued} events wait in MinIO's queue_dir"
        ends = await topic_end_offsets(self.bootstrap, self.topic)
        for group in (self.group, self.processor_group):
            done = await committed_offsets(self.bootstrap, group, self.topic, len(ends))
            behind = {p: e - done.get(p, 0) for p, e in ends.items() if done.get(p, 0) < e}
            if behind:
                return f"group {group} behind by {behind}"
        expected = await self._expected_rows()
        indexed = await index_rows(self.store, self.bucket)
        if indexed != expected:
            return f"index has {len(indexed)} rows, expected {len(expected)}"
        unfinished = [
            j for j in await self.store.jobs(bucket=self.bucket) if j.status != JobStatus.DONE
        ]
        if unfinished:
            return f"{len(unfinished)} jobs not done"
        return ""

    async def _expected_rows(self) -> Listing:
        """The bucket's listing; after a MinIO stop, what the published events say."""
        if self.minio_may_lose:
            records = await read_range(self.bootstrap, self.topic, self.start)
            return state_from_events(published_events(records, self.bucket))
        return await asyncio.to_thread(
            bucket_listing, self.minio, self.bucket, versions=self.versioned
        )

    async def _explain(self) -> str:
        """For each object the index and the bucket disagree on: what MinIO published
        about it and what the journal holds (tells a lost event from a dropped one)."""
        listing = await asyncio.to_thread(
            bucket_listing, self.minio, self.bucket, versions=self.versioned
        )
        indexed = await index_rows(self.store, self.bucket)
        keys = sorted({row[0] for row in listing ^ indexed})[:5]
        if not keys:
            return "index equals the bucket"
        lines = [f"MinIO's queue_dir holds {queued_events(self.queue_dir)} events"]
        records = await read_range(self.bootstrap, self.topic, self.start)
        lines.append(f"only in the bucket: {sorted(listing - indexed)[:5]}")
        lines.append(f"only in the index: {sorted(indexed - listing)[:5]}")
        for key in keys:
            published = [
                (r.partition, r.offset, e)
                for r in records
                for e in published_events([r], self.bucket)
                if e.key == key
            ]
            journal = await self.store.journal(bucket=self.bucket, key=key, limit=100)
            journaled = [(j.event_name, j.sequencer, j.kafka) for j in journal]
            errors = [e for u in self.uploaders for e in u.errors.get(key, [])]
            lines.append(
                f"{key!r}: published {published}; journaled {journaled};"
                f" upload errors before the acknowledgement: {errors}"
            )
        return "\n".join(lines)

    async def until_logged(self, event: str, timeout_s: float = 60) -> None:
        """Until the consumer has logged ``event``."""
        deadline = time.monotonic() + timeout_s
        while not any(e.get("event") == event for e in self.consumer.log_events()):
            self.consumer.assert_alive()
            assert time.monotonic() < deadline, f"the consumer never logged {event!r}"
            await asyncio.sleep(0.1)

    async def until_auto_reconciled(self, reason: str, timeout_s: float = 120) -> dict[str, Any]:
        """The consumer's log line of its first automatic reconcile for ``reason`` (with
        ``at``: this clock's time when it was seen)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.consumer.log_events():
                if event.get("event") == "automatic reconcile" and reason in event.get(
                    "reasons", []
                ):
                    return {"at": time.monotonic(), "event": event}
            self.consumer.assert_alive()
            if time.monotonic() > deadline:
                ours = ("consumer.repair.auto", "consumer.minio.queue_watch")
                said = [e for e in self.consumer.log_events() if e.get("logger") in ours][-20:]
                raise AssertionError(
                    f"no automatic reconcile for {reason} in {timeout_s} s: {said}"
                )
            await asyncio.sleep(0.25)

    async def status(self) -> dict[str, Any]:
        """The consumer's /status report (its health port is in its log)."""
        ports = [
            e["port"]
            for e in self.consumer.log_events()
            if e.get("event") == "health server listening"
        ]
        assert ports, "the consumer logged no health port"
        async with httpx.AsyncClient(timeout=STATUS_TIMEOUT_S) as client:
            response = await client.get(f"http://127.0.0.1:{ports[-1]}/status")
        report: dict[str, Any] = response.json()
        return report

    async def reopen_store(self) -> None:
        """A fresh connection (pool) to the index, after its server restarted."""
        await self.store.close()
        self.store = open_index(self.store_url)
        await self.store.start()

    async def finish(self, *, crashes: bool = False, tracebacks: bool = True) -> None:
        """Stop every consumer process cleanly (each must exit 0; with ``tracebacks``
        false, no log may hold one), then check every invariant."""
        for process in self.processes:
            if process.wanted:
                code = await asyncio.to_thread(process.stop)
                assert code == 0, f"{process.role} exited {code}:\n{process.log_tail()}"
        for process in self.processes:
            if not tracebacks:
                assert "Traceback" not in process.logs(), f"a traceback in {process.role}'s log"
        lost = await check_all(
            store=self.store,
            minio=self.minio,
            bootstrap=self.bootstrap,
            events_topic=self.topic,
            start=self.start,
            bucket=self.bucket,
            versioned=self.versioned,
            done=self.done,
            processing=self.processing,
            dlq_topic=self.dlq_topic,
            indexer_group=self.group,
            poison=self.poison,
            crashes=crashes,
            minio_may_lose=self.minio_may_lose,
            unsettled=self.unsettled,
        )
        self.lost = lost
        for key in sorted({row[0] for row in lost}):
            errors = [e for u in self.uploaders for e in u.errors.get(key, [])]
            print(f"{key!r}: its upload met {errors or 'no error'} before MinIO acknowledged it")

    def reconcile(self, *, repair: bool) -> list[dict[str, object]]:
        """``reconcile --bucket <the bucket> [--repair] --json`` as an operator runs it,
        with the consumer's settings: its differences, one dict each. Must exit 0."""
        command = [sys.executable, "-m", "consumer", "reconcile", "--bucket", self.bucket]
        command += ["--repair", "--json"] if repair else ["--json"]
        done = subprocess.run(
            command,
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=RECONCILE_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"reconcile exited {done.returncode}: {done.stderr}"
        print(done.stderr.strip())
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    async def repair_and_require_index_equals_bucket(self) -> None:
        """After a MinIO stop the index follows the published events, which may lack the
        one write MinIO never published: ``reconcile --repair`` repairs that from the
        listing, after which the index must equal the bucket and a second reconcile
        must find nothing."""
        repaired = await asyncio.to_thread(self.reconcile, repair=True)
        lost = {row[0] for row in self.lost}
        assert {str(r["key"]) for r in repaired} == lost, (
            f"reconcile repaired {repaired}, but MinIO lost the events of {sorted(lost)}"
        )
        assert all(r.get("repair") in ("reindexed", "tombstoned") for r in repaired), repaired
        await index_matches_bucket(self.store, self.minio, self.bucket, versioned=self.versioned)
        again = await asyncio.to_thread(self.reconcile, repair=False)
        assert again == [], f"differences left after the repair: {again}"


# An empty queue file older than this is one MinIO will never send (see queued_events);
# a younger one may be an entry MinIO is writing right now.
EMPTY_ENTRY_SETTLED_S = 2.0


def queued_events(queue_dir: Path | None) -> int:
    """Events MinIO holds in its queue_dir and can still deliver to Kafka (0 when
    unknown). An entry left empty by a kill -9 inside MinIO's write of it is not one:
    its send loop reads an empty file as "not found", takes it for an entry already sent
    and returns without removing it (internal/store/queuestore.go GetRaw,
    internal/event/target/kafka.go SendFromStore), so the file stays for good while its
    event was never published. Such an event is the node's loss, like an event a stopped
    MinIO never queued; only a reconcile repairs it."""
    if queue_dir is None:
        return 0
    return sum(1 for path in _queue_entries(queue_dir) if _sendable(path))


def _queue_entries(queue_dir: Path) -> list[Path]:
    return sorted(path for path in queue_dir.rglob("*") if path.is_file())


def _sendable(path: Path) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:  # sent and removed meanwhile
        return False
    return stat.st_size > 0 or time.time() - stat.st_mtime < EMPTY_ENTRY_SETTLED_S


def empty_queue_entries(queue_dir: Path | None) -> list[str]:
    """The entries of MinIO's queue_dir left empty for good (see queued_events)."""
    if queue_dir is None:
        return []
    return [
        str(path.relative_to(queue_dir))
        for path in _queue_entries(queue_dir)
        if path.exists() and not _sendable(path)
    ]


def queue_files(queue_dir: Path | None) -> str:
    """Every file of MinIO's queue_dir with its size and age (what a converge that timed
    out prints: an empty entry is one MinIO never sends)."""
    if queue_dir is None:
        return "MinIO's queue_dir: unknown"
    lines = [f"MinIO's queue_dir {queue_dir}:"]
    for path in _queue_entries(queue_dir):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            age_s = time.time() - stat.st_mtime
            relative = path.relative_to(queue_dir)
            lines.append(f"  {relative}  {stat.st_size} bytes, {age_s:.0f} s old")
    return "\n".join(lines) if len(lines) > 1 else f"{lines[0]} empty"


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyClient]:
    """One Toxiproxy for the session (started on first use): the network-fault scenarios
    put their proxies on it and remove them when done."""
    with ToxiproxyServer(tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log") as client:
        yield client


@pytest.fixture
async def make_rig(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    make_topic: Callable[..., Awaitable[str]],
    backend: Backend,
    tmp_path: Path,
) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    async def factory(
        *,
        versioned: bool = False,
        role: str = "all",
        processors: tuple[str, ...] = ("audio-probe",),
        env: dict[str, str] | None = None,
        index_url: str | None = None,
        auto_reconcile: bool = False,
        private: PrivateMinio | None = None,
    ) -> Rig:
        seed = fault_seed()
        print(f"fault scenario seed: {seed} (rerun with FAULTS_SEED={seed})")
        world, client, queue_dir = stack, minio, _stack_queue_dir(stack)
        if private is None:
            bucket = make_bucket("fault")
            results = make_bucket("results", notify_events=False)
        else:  # the scenario's own MinIO, the stack's Kafka
            values = {**stack.values, "MINIO_ENDPOINT": private.endpoint}
            world = replace(stack, values=values, control=None)
            client, queue_dir = minio_client(world.settings()), private.queue_dir
            bucket, results = _private_buckets(client, world)
        # Versioned results: every stored result is a version, so a job that ran twice
        # leaves two of them (jobs_ended_once counts them).
        client.set_bucket_versioning(results, VersioningConfig(ENABLED))
        if versioned:
            client.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
        dlq = await make_topic("dlq", 1)
        group = unique_name("fault")
        bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
        start = await topic_end_offsets(bootstrap, stack.events_topic)
        for name in (group, f"{group}-processor"):
            await commit_group(bootstrap, name, stack.events_topic, start)
        rules = tmp_path / "rules.json"
        rules.write_text(
            json.dumps({"rules": [{"bucket": bucket, "processors": list(processors)}]})
        )
        # No OpenTelemetry exporter from the caller's environment: traffic stays local.
        inherited = {k: v for k, v in cli_env(world, tmp_path, group).items() if "OTEL_" not in k}
        if auto_reconcile:
            inherited |= _auto_reconcile_env(bucket, tmp_path)
        env = (
            inherited
            | {
                "INDEX_URL": index_url or backend.url,
                "KAFKA_DLQ_TOPIC": dlq,
                "MINIO_RESULTS_BUCKET_NAME": results,
                "PROCESSING_RULES_FILE": str(rules),
                "MINIO_CLEANUP_DAYS": "0",  # no retention sweeps in these scenarios
                # Jobs outlast a stopped MinIO by retrying, instead of failing.
                "MINIO_MAX_RETRIES": "12",
                "MINIO_RETRY_BACKOFF": "0.5",
                "INDEXER_MAX_MESSAGE_BYTES": "65536",
                # Small batches: a kill lands between commits, not after the last one.
                "INDEXER_BATCH_MAX_RECORDS": "50",
                "SHUTDOWN_GRACE_S": "30",
            }
            | (env or {})
        )
        store = open_index(index_url or backend.url)
        await store.start()
        rig = Rig(
            stack=world,
            minio=client,
            store=store,
            store_url=index_url or backend.url,
            bucket=bucket,
            results_bucket=results,
            dlq_topic=dlq,
            group=group,
            versioned=versioned,
            start=start,
            queue_dir=queue_dir,
            consumer=ConsumerProcess(env, tmp_path / f"consumer-{len(rigs)}", role=role),
            rng=random.Random(seed),
            seed=seed,
            env=env,
            log_root=tmp_path / f"rig-{len(rigs)}",
            processing=Processing(results, processors),
        )
        rigs.append(rig)
        return rig

    try:
        yield factory
    finally:
        for rig in rigs:
            for uploader in rig.uploaders:
                uploader.close()
            for process in rig.processes:
                process.close()
            await rig.store.close()


def _stack_queue_dir(stack: StackEndpoints) -> Path | None:
    return stack.control.state_dir / "minio" / "queue" if stack.control else None


def _private_buckets(client: Minio, world: StackEndpoints) -> tuple[str, str]:
    """A bucket wired to the private MinIO's Kafka target and a results bucket, there
    (the server goes with its data at the end: nothing to clean up)."""
    settings = world.settings()
    notify = load_notify_config(REPO_ROOT / "minio-notify.json", settings)
    bucket, results = unique_name("fault"), unique_name("results")
    client.make_bucket(bucket)
    client.make_bucket(results)
    rules = notify.for_bucket(settings.minio_audio_bucket_name)
    ensure_notifications(client, bucket, rules, notify.target.arn)
    return bucket, results


# The automatic reconcile, quick enough for a scenario: MinIO's metrics read every second,
# no periodic run (only MinIO's triggers), settled past MinIO's 10 s metrics cache, and a
# run only once the indexer has caught up.
AUTO_RECONCILE_ENV = {
    "RECONCILE_AUTO": "true",
    "RECONCILE_INTERVAL_S": "0",
    "RECONCILE_SETTLE_S": "15",
    "RECONCILE_MIN_GAP_S": "0",
    "RECONCILE_MAX_LAG": "0",
    "MINIO_METRICS_INTERVAL_S": "1",
}


def _auto_reconcile_env(bucket: str, tmp_path: Path) -> dict[str, str]:
    """The automatic reconcile on, for ``bucket`` alone (a notification file naming only
    it: the stack's other buckets are other tests' business)."""
    config = {
        "target": {"id": NOTIFY_TARGET_ID, "arn": f"arn:minio:sqs::{NOTIFY_TARGET_ID}:kafka"},
        "buckets": [
            {
                "bucket": bucket,
                "rules": [{"id": "all", "events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}],
            }
        ],
    }
    path = tmp_path / f"notify-{bucket}.json"
    path.write_text(json.dumps(config))
    return AUTO_RECONCILE_ENV | {"MINIO_NOTIFY_CONFIG": str(path)}


@asynccontextmanager
async def outage(stack_control: Stack, server: str) -> AsyncIterator[None]:
    """``server`` stopped for the body; started again afterwards, also on failure. (In
    threads: the stack's readiness probes run their own event loops.)"""
    await asyncio.to_thread(stack_control.stop_server, server)
    try:
        yield
    finally:
        await asyncio.to_thread(stack_control.start_server, server)
