"""Retention against the real stack: lifecycle rules applied by ``setup`` (merged with the
bucket's own, read back), and the sweeper — dry runs that delete nothing, the safety rules
(processing in flight, processed-only, MinIO's newer content, object-lock retention and
legal hold, a lagging indexer), deletions flowing back through their removal events into
the index, and the journal recording who deleted what and under which policy.

Ages are simulated with policies in seconds (objects really get old) and, for "the index
says old, MinIO says new", with an index row whose first event is two hours old.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio
from minio.commonconfig import ENABLED, GOVERNANCE, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from minio.retention import Retention
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from consumer.events import EventKind, ObjectEvent
from consumer.index import IndexStore, JobOutcome, JobRequest, JobStatus, ObjectQuery, open_index
from consumer.index.records import Lease
from consumer.indexer import Indexer
from consumer.retention.audit import REMOVAL_KINDS, deletion_cause
from consumer.retention.decisions import Outcome, SweepItem
from consumer.retention.lifecycle import RULE_ID_PREFIX
from consumer.retention.metrics import RetentionMetrics
from consumer.retention.policy import RetentionPolicy
from consumer.retention.sweeper import RetentionWorker, Sweeper
from consumer.settings import Settings
from consumer.setup.provisioning import run_setup
from consumer.setup.report import Action
from tests.conftest import Backend, StackEndpoints, _empty_and_remove_bucket, unique_name
from tests.helpers import Published
from tests.integration.test_cli_e2e import cli_env, json_rows, run_cli
from tests.test_retention_pure import _points

pytestmark = pytest.mark.integration

INTERVIEW = {"session-type": "interview"}


def _put(minio: Minio, bucket: str, key: str, body: bytes = b"audio", **extra: object) -> None:
    minio.put_object(bucket, key, io.BytesIO(body), len(body), content_type="audio/ogg", **extra)  # type: ignore[arg-type]


def _live_keys(minio: Minio, bucket: str) -> set[str]:
    return {obj.object_name or "" for obj in minio.list_objects(bucket, recursive=True)}


async def _index(settings: Settings, store: IndexStore) -> None:
    """Drain the events topic into ``store`` with the settings' group (the group the
    sweeper checks the lag of)."""
    await asyncio.wait_for(Indexer(settings, store).run(burst=True), timeout=120)


async def _set_job(store: IndexStore, bucket: str, key: str, status: JobStatus) -> None:
    """Give the object's indexed version a processing job in ``status``."""
    record = await store.get_object(bucket, key)
    assert record is not None, key
    request = JobRequest(
        record.bucket,
        record.key,
        record.version_id,
        "audio-probe",
        record.sequencer,
        record.etag,
        record.size,
    )
    lease = Lease("test-runner", 60.0)
    assert (await store.claim_jobs([request], lease)).run == [request]
    if status is not JobStatus.PENDING:
        await store.start_job(request, lease.owner)
    if status.finished:
        await store.finish_job(request, JobOutcome(status, duration_ms=1), lease.owner)


def _old_index_row(bucket: str, key: str) -> ObjectEvent:
    """A created event two hours old: applied before the real upload's event, the index
    then holds the key since two hours while MinIO's content is new (an overwrite)."""
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event_name="s3:ObjectCreated:Put",
        kind=EventKind.CREATED,
        event_time=datetime.now(UTC) - timedelta(hours=2),
        sequencer="1",
        size=3,
        etag="0" * 32,
    )


def _by_key(items: list[SweepItem]) -> dict[str, tuple[Outcome, str | None]]:
    return {item.key: (item.outcome, item.reason) for item in items}


async def test_sweep_deletes_only_what_policies_and_safety_allow(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], backend: Backend
) -> None:
    bucket = make_bucket("sweep")
    policies = [
        RetentionPolicy(
            name="interviews", bucket=bucket, prefix="user_", seconds=2, metadata=INTERVIEW
        ),
        RetentionPolicy(
            name="processed", bucket=bucket, prefix="done/", seconds=2, only_processed=True
        ),
        RetentionPolicy(name="hourly", bucket=bucket, prefix="recent/", seconds=3600),
    ]
    settings = stack.settings(INDEX_URL=backend.url, KAFKA_GROUP_ID=unique_name("g"))
    published = Published(stack)
    await published.mark()
    _put(minio, bucket, "user_1/old interview.ogg", b"interview one", metadata=INTERVIEW)
    _put(minio, bucket, "user_1/old lecture.ogg", metadata={"session-type": "lecture"})
    _put(minio, bucket, "other/old interview.ogg", metadata=INTERVIEW)
    _put(minio, bucket, "user_2/being processed.ogg", metadata=INTERVIEW)
    _put(minio, bucket, "done/processed.ogg", b"processed!")
    _put(minio, bucket, "done/unprocessed.ogg")
    _put(minio, bucket, "recent/overwritten.ogg")
    uploaded_at = time.monotonic()
    everything = _live_keys(minio, bucket)
    await published.wait(bucket, 7)

    reader = InMemoryMetricReader()
    metrics = RetentionMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    async with open_index(settings.index_url) as store:
        await store.apply_batch([(_old_index_row(bucket, "recent/overwritten.ogg"), None)])
        await _index(settings, store)
        await _set_job(store, bucket, "user_2/being processed.ogg", JobStatus.RUNNING)
        await _set_job(store, bucket, "done/processed.ogg", JobStatus.DONE)
        await asyncio.sleep(max(0.0, uploaded_at + 2.5 - time.monotonic()))

        seen: list[SweepItem] = []
        dry = await Sweeper(settings, store, policies).sweep(dry_run=True, on_item=seen.append)
        expected = {
            "user_1/old interview.ogg": (Outcome.WOULD_DELETE, None),
            "done/processed.ogg": (Outcome.WOULD_DELETE, None),
            "user_2/being processed.ogg": (Outcome.SKIPPED, "processing"),
            "done/unprocessed.ogg": (Outcome.SKIPPED, "unprocessed"),
            "recent/overwritten.ogg": (Outcome.SKIPPED, "too_recent"),
        }
        assert _by_key(seen) == expected
        assert dry.blocked is None
        assert _live_keys(minio, bucket) == everything, "a dry run deletes nothing"

        worker = RetentionWorker(settings, store, policies, metrics=metrics)
        report = await asyncio.wait_for(worker.run(burst=True), timeout=60)
        assert report is not None
        assert report.summary()["deleted"] == 2
        assert report.summary()["deleted_bytes"] == len(b"interview one") + len(b"processed!")
        assert report.summary()["skipped_by_reason"] == {
            "processing": 1,
            "too_recent": 1,
            "unprocessed": 1,
        }
        gone = {"user_1/old interview.ogg", "done/processed.ogg"}
        assert _live_keys(minio, bucket) == everything - gone

        # The deletions come back as removal events and de-index the objects.
        await published.wait(bucket, 9)
        await _index(settings, store)
        indexed = {record.key for record in await store.list_objects(ObjectQuery(bucket=bucket))}
        assert indexed == everything - gone
        removals = await store.journal(bucket=bucket, kinds=REMOVAL_KINDS)
        assert {r.key for r in removals} == gone
        for removal in removals:
            assert removal.kind is EventKind.EXPIRED
            assert removal.principal_id == stack.values["MINIO_ACCESS_KEY"]
            cause = deletion_cause(removal, policies)
            assert cause.actor == "sweeper"
            expected_policy = "interviews" if removal.key.startswith("user_") else "processed"
            assert cause.policy == expected_policy

    points = _points(reader)
    interviews = (("bucket", bucket), ("policy", "interviews"))
    assert points[("retention.objects.expired", interviews)] == 1
    assert points[("retention.expired", interviews)] == len(b"interview one")
    assert points[("retention.objects.skipped", (*interviews, ("reason", "processing")))] == 1
    assert points[("retention.sweeps", (("result", "completed"),))] == 1


async def test_object_lock_retention_and_legal_hold_are_skipped_and_reported(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("locked", object_lock=True)
    policy = RetentionPolicy(name="locked-bucket", bucket=bucket, seconds=1)
    settings = stack.settings(
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}", KAFKA_GROUP_ID=unique_name("g")
    )
    published = Published(stack)
    await published.mark()
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    _put(minio, bucket, "retained.ogg", retention=Retention(GOVERNANCE, until))
    _put(minio, bucket, "held.ogg", legal_hold=True)
    _put(minio, bucket, "free.ogg")
    await published.wait(bucket, 3)
    await asyncio.sleep(1.5)
    async with open_index(settings.index_url) as store:
        await _index(settings, store)
        seen: list[SweepItem] = []
        report = await Sweeper(settings, store, [policy]).sweep(on_item=seen.append)
    assert _by_key(seen) == {
        "retained.ogg": (Outcome.SKIPPED, "retention"),
        "held.ogg": (Outcome.SKIPPED, "legal_hold"),
        "free.ogg": (Outcome.DELETED, None),
    }
    assert report.summary()["skipped_by_reason"] == {"legal_hold": 1, "retention": 1}
    # Object lock means versioning: the sweeper deleted free.ogg's version itself, so no
    # data stays behind a delete marker.
    versions = {
        (obj.object_name, obj.is_delete_marker)
        for obj in minio.list_objects(bucket, include_version=True)
    }
    assert versions == {("retained.ogg", False), ("held.ogg", False)}


async def test_a_lagging_indexer_blocks_the_sweep_and_the_cli_reports_it(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("lag")
    group = unique_name("g")
    policies_file = tmp_path / "policies.json"
    policies_file.write_text(
        json.dumps({"policies": [{"name": "tiny", "bucket": bucket, "seconds": 1}]})
    )
    env = cli_env(stack, tmp_path, group) | {
        "RETENTION_POLICIES_FILE": str(policies_file),
        "RETENTION_MAX_LAG": "2",
    }
    settings = stack.settings(INDEX_URL=env["INDEX_URL"], KAFKA_GROUP_ID=group, RETENTION_MAX_LAG=2)
    published = Published(stack)
    await published.mark()
    for number in range(2):
        _put(minio, bucket, f"first/{number}.ogg")
    await published.wait(bucket, 2)
    async with open_index(settings.index_url) as store:
        await _index(settings, store)
    for number in range(3):
        _put(minio, bucket, f"second/{number}.ogg")
    await published.wait(bucket, 5)
    await asyncio.sleep(1.2)

    reader = InMemoryMetricReader()
    metrics = RetentionMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    async with open_index(settings.index_url) as store:
        policy = RetentionPolicy(name="tiny", bucket=bucket, seconds=1)
        report = await Sweeper(settings, store, [policy], metrics=metrics).sweep()
    assert report.blocked is not None
    assert "behind" in report.blocked
    assert report.lag is not None
    assert report.lag >= 3
    assert report.summary()["deleted"] == 0
    assert _points(reader)[("retention.sweeps", (("result", "blocked"),))] == 1
    assert len(_live_keys(minio, bucket)) == 5

    blocked = await asyncio.to_thread(run_cli, env, "retention", "sweep", "--json")
    assert blocked.returncode == 1
    assert blocked.stdout == ""
    assert "Traceback" not in blocked.stderr
    # The warning is logged (JSON, for the log pipeline), and the last line says it plainly.
    last_line = blocked.stderr.strip().splitlines()[-1]
    assert last_line.startswith("consumer: failed: the indexer")
    assert "behind" in last_line

    # Once the indexer caught up, the dry run lists exactly what would go and keeps it.
    async with open_index(settings.index_url) as store:
        await _index(settings, store)
    dry = json_rows(
        await asyncio.to_thread(run_cli, env, "retention", "sweep", "--dry-run", "--json")
    )
    assert {row["key"] for row in dry} == _live_keys(minio, bucket)
    assert {row["outcome"] for row in dry} == {"would_delete"}
    assert {row["policy"] for row in dry} == {"tiny"}
    assert len(_live_keys(minio, bucket)) == 5

    swept = json_rows(await asyncio.to_thread(run_cli, env, "retention", "sweep", "--json"))
    assert sorted(row["outcome"] for row in swept) == ["deleted"] * 5
    assert _live_keys(minio, bucket) == set()
    await published.wait(bucket, 10)
    async with open_index(settings.index_url) as store:
        await _index(settings, store)
    audit = json_rows(
        await asyncio.to_thread(run_cli, env, "retention", "audit", "--json", "--bucket", bucket)
    )
    assert len(audit) == 5
    assert {(row["actor"], row["policy"]) for row in audit} == {("sweeper", "tiny")}
    assert all("voxpersona-retention/tiny" in row["user_agent"] for row in audit)


async def test_setup_applies_lifecycle_rules_and_keeps_the_buckets_own(
    stack: StackEndpoints, minio: Minio, tmp_path: Path
) -> None:
    names = {
        "MINIO_AUDIO_BUCKET_NAME": unique_name("audio"),
        "MINIO_BUCKET_NAME": unique_name("storage"),
        "MINIO_RESULTS_BUCKET_NAME": unique_name("results"),
        "KAFKA_EVENTS_TOPIC": unique_name("events"),
        "KAFKA_DLQ_TOPIC": unique_name("dlq"),
    }
    audio, storage = names["MINIO_AUDIO_BUCKET_NAME"], names["MINIO_BUCKET_NAME"]
    policies_file = tmp_path / "policies.json"

    def write_policies(*policies: dict[str, object]) -> None:
        policies_file.write_text(json.dumps({"policies": list(policies)}))

    scratch = {"name": "scratch", "bucket": audio, "prefix": "tmp/", "days": 2}
    swept = {"name": "interviews", "bucket": audio, "days": 90, "metadata": INTERVIEW}
    write_policies(scratch, swept, {"name": "storage", "bucket": storage, "days": 30})
    settings = stack.settings(**names, RETENTION_POLICIES_FILE=str(policies_file))
    foreign = Rule(
        ENABLED,
        rule_filter=Filter(prefix="logs/"),
        rule_id="ops-logs",
        expiration=Expiration(days=7),
    )
    try:
        minio.make_bucket(audio)
        minio.set_bucket_lifecycle(audio, LifecycleConfig([foreign]))
        first = await run_setup(settings)
        lifecycle = {c.name: c for c in first if c.resource == "lifecycle"}
        assert lifecycle[audio].action is Action.CREATED
        assert "1 other rule(s) kept" in lifecycle[audio].detail
        assert lifecycle[storage].action is Action.CREATED
        assert lifecycle[names["MINIO_RESULTS_BUCKET_NAME"]].action is Action.UNCHANGED

        def rules(bucket: str) -> dict[str, tuple[str | None, int | None, int | None]]:
            config = minio.get_bucket_lifecycle(bucket)
            assert config is not None
            return {
                rule.rule_id or "": (
                    rule.rule_filter.prefix if rule.rule_filter else None,
                    rule.expiration.days if rule.expiration else None,
                    rule.noncurrent_version_expiration.noncurrent_days
                    if rule.noncurrent_version_expiration
                    else None,
                )
                for rule in config.rules
            }

        # The metadata policy is the sweeper's: it is not a lifecycle rule.
        assert rules(audio) == {
            "ops-logs": ("logs/", 7, None),
            f"{RULE_ID_PREFIX}scratch": ("tmp/", 2, 2),
        }
        second = await run_setup(settings)
        assert [c.action for c in second] == [Action.UNCHANGED] * len(second)

        write_policies({**scratch, "days": 5})
        third = await run_setup(settings)
        changed = {(c.name, c.action) for c in third if c.resource == "lifecycle"}
        assert (audio, Action.UPDATED) in changed
        assert rules(audio) == {
            "ops-logs": ("logs/", 7, None),
            f"{RULE_ID_PREFIX}scratch": ("tmp/", 5, 5),
        }
        # The storage policy left the file, so its rule left the bucket.
        assert minio.get_bucket_lifecycle(storage) is None
    finally:
        for bucket in (*settings.managed_buckets,):
            _empty_and_remove_bucket(minio, bucket)
