"""Retention's pure parts: policies, lifecycle rules and their merge, the sweeper's safety
decisions, pacing, lag, the audit of who deleted what, and the metrics it records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio.commonconfig import ENABLED, Filter, Tags
from minio.lifecycleconfig import (
    AbortIncompleteMultipartUpload,
    Expiration,
    Rule,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import ValidationError

from consumer.errors import ConfigError
from consumer.events import EventKind, event_kind_of, retention_policy_of
from consumer.index import JobRecord, JobStatus, JournalRecord, ObjectRecord
from consumer.kafka.lag import lag_by_partition
from consumer.retention.audit import deletion_cause
from consumer.retention.decisions import (
    Outcome,
    Pacer,
    SkipReason,
    StoredFacts,
    SweepItem,
    SweepReport,
    delete_error_outcome,
    lag_block,
    skip_for_jobs,
    skip_for_stored,
    stored_facts,
)
from consumer.retention.lifecycle import (
    RULE_ID_PREFIX,
    current_keys,
    desired_rules,
    foreign_count,
    rule_key,
    splice_lifecycle,
)
from consumer.retention.metrics import RetentionMetrics
from consumer.retention.policy import (
    Enforcement,
    RetentionPolicy,
    default_policies,
    lifecycle_policy_for,
    load_policies,
)
from consumer.settings import Settings
from tests.conftest import REPO_ROOT

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _policy(**values: object) -> RetentionPolicy:
    base: dict[str, object] = {"name": "p", "bucket": "audio", "days": 30}
    base.update(values)
    return RetentionPolicy.model_validate(base)


def _record(key: str = "user_1/a.ogg", version: str = "", etag: str = "e1") -> ObjectRecord:
    return ObjectRecord(
        bucket="audio",
        key=key,
        version_id=version,
        size=10,
        etag=etag,
        content_type="audio/ogg",
        user_id="1",
        metadata={},
        first_event_time=NOW - timedelta(days=40),
        last_event_time=NOW - timedelta(days=40),
        sequencer="1",
        indexed_at=NOW,
        deleted=False,
    )


def _job(status: JobStatus, version: str = "", processor: str = "audio-probe") -> JobRecord:
    return JobRecord(
        bucket="audio",
        key="user_1/a.ogg",
        version_id=version,
        processor=processor,
        sequencer="1",
        etag="e1",
        status=status,
        attempts=1,
        last_error=None,
        result_bucket=None,
        result_key=None,
        created_at=NOW,
        started_at=None,
        finished_at=None,
        duration_ms=None,
        updated_at=NOW,
    )


# --- policies --------------------------------------------------------------------------


def test_a_policy_needs_exactly_one_age_and_a_token_name() -> None:
    with pytest.raises(ValidationError, match="exactly one of days or seconds"):
        _policy(days=None)
    with pytest.raises(ValidationError, match="exactly one of days or seconds"):
        _policy(seconds=5)
    with pytest.raises(ValidationError, match="name"):
        _policy(name="two words")
    with pytest.raises(ValidationError, match="extra"):
        _policy(older_than=3)


def test_who_enforces_a_policy() -> None:
    assert _policy().enforcement is Enforcement.LIFECYCLE
    assert _policy(prefix="tmp/").enforcement is Enforcement.LIFECYCLE
    assert _policy(metadata={"Session-Type": "interview"}).enforcement is Enforcement.SWEEPER
    assert _policy(only_processed=True).enforcement is Enforcement.SWEEPER
    assert _policy(days=None, seconds=2).enforcement is Enforcement.SWEEPER


def test_metadata_names_are_lower_cased_as_events_report_them() -> None:
    policy = _policy(metadata={"Session-Type": "interview"})
    assert policy.metadata == {"session-type": "interview"}
    assert policy.max_age == timedelta(days=30)
    assert _policy(days=None, seconds=90).max_age == timedelta(seconds=90)
    assert "audio/* older than 30 day(s) where session-type=interview" in policy.describe()


def test_default_policy_is_the_seeds_cleanup_of_the_storage_bucket() -> None:
    (cleanup,) = default_policies(_settings(MINIO_CLEANUP_DAYS=7))
    assert (cleanup.name, cleanup.bucket, cleanup.days) == ("cleanup", "voxpersona-storage", 7)
    assert cleanup.enforcement is Enforcement.LIFECYCLE
    assert default_policies(_settings(MINIO_CLEANUP_DAYS=0)) == ()


def test_the_example_policies_file_loads() -> None:
    path = REPO_ROOT / "infra" / "retention-policies.example.json"
    policies = load_policies(_settings(RETENTION_POLICIES_FILE=str(path)))
    assert [p.name for p in policies] == [
        "cleanup",
        "scratch",
        "interviews-after-processing",
        "results",
    ]
    assert policies[2].enforcement is Enforcement.SWEEPER


def test_a_bad_policies_file_is_one_clear_config_error(tmp_path: Path) -> None:
    path = tmp_path / "policies.json"
    path.write_text(json.dumps({"policies": [{"name": "a", "bucket": "b1x", "days": 1}] * 2}))
    with pytest.raises(ConfigError, match="policy names must be unique: a"):
        load_policies(_settings(RETENTION_POLICIES_FILE=str(path)))
    path.write_text('{"policies": [{"name": "a", "bucket": "b1x", "days": 0}]}')
    with pytest.raises(ConfigError, match=r"RETENTION_POLICIES_FILE .*policies\.0\.days"):
        load_policies(_settings(RETENTION_POLICIES_FILE=str(path)))
    with pytest.raises(ConfigError, match="No such file"):
        load_policies(_settings(RETENTION_POLICIES_FILE=str(tmp_path / "missing.json")))


def test_an_ilm_expiry_is_attributed_to_the_longest_matching_lifecycle_policy() -> None:
    policies = [
        _policy(name="all"),
        _policy(name="tmp", prefix="tmp/", days=2),
        _policy(name="swept", prefix="tmp/x", metadata={"a": "b"}),
    ]
    assert lifecycle_policy_for(policies, "audio", "tmp/x/1.ogg").name == "tmp"  # type: ignore[union-attr]
    assert lifecycle_policy_for(policies, "audio", "user_1/1.ogg").name == "all"  # type: ignore[union-attr]
    assert lifecycle_policy_for(policies, "other", "tmp/1.ogg") is None


# --- lifecycle rules -------------------------------------------------------------------


def _foreign_rule() -> Rule:
    tags = Tags.new_object_tags()
    tags["class"] = "scratch"
    return Rule(
        ENABLED,
        rule_filter=Filter(tag=tags),
        rule_id="someone-elses",
        expiration=Expiration(days=3),
        abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(1),
    )


def test_only_lifecycle_policies_of_the_bucket_become_rules() -> None:
    policies = [
        _policy(name="a", prefix="tmp/", days=2),
        _policy(name="b", bucket="other"),
        _policy(name="c", only_processed=True),
    ]
    (rule,) = desired_rules(policies, "audio")
    assert rule_key(rule) == (f"{RULE_ID_PREFIX}a", ENABLED, "tmp/", 2, 2)


FOREIGN_XML = (
    b'<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Rule><ID>big-tmp</ID><Status>Enabled</Status><Filter><And><Prefix>tmp/</Prefix>"
    b"<ObjectSizeGreaterThan>1048576</ObjectSizeGreaterThan></And></Filter>"
    b"<Expiration><Days>3</Days></Expiration></Rule>"
    b"<Rule><ID>legacy</ID><Prefix>logs/</Prefix><Status>Enabled</Status>"
    b"<Expiration><Days>9</Days></Expiration></Rule></LifecycleConfiguration>"
)


def test_setup_keeps_other_rules_byte_for_byte_even_what_minio_py_cannot_model() -> None:
    """A size condition and a rule-level Prefix are beyond minio-py's model: re-marshalled,
    they would vanish and the rules would expire more. They must come back untouched."""
    desired = desired_rules([_policy(name="scratch", prefix="x/", days=2)], "audio")
    document = splice_lifecycle(FOREIGN_XML, desired)
    assert document is not None
    assert b"<ObjectSizeGreaterThan>1048576</ObjectSizeGreaterThan>" in document
    assert b"<ID>legacy</ID><Prefix>logs/</Prefix>" in document
    assert current_keys(document) == [(f"{RULE_ID_PREFIX}scratch", ENABLED, "x/", 2, 2)]
    assert foreign_count(document) == 2
    assert splice_lifecycle(document, desired) is None  # applied: nothing to do
    emptied = splice_lifecycle(document, [])
    assert emptied is not None
    assert current_keys(emptied) == []
    assert foreign_count(emptied) == 2
    only_ours = splice_lifecycle(None, desired)
    assert only_ours is not None
    assert splice_lifecycle(only_ours, []) == b""  # nothing left: delete the lifecycle


# --- the sweeper's decisions -----------------------------------------------------------


def test_processing_in_flight_keeps_an_object_and_processed_only_waits_for_done() -> None:
    policy, processed_only = _policy(), _policy(only_processed=True)
    record = _record()
    assert skip_for_jobs(policy, record, []) is None
    assert skip_for_jobs(policy, record, [_job(JobStatus.RUNNING)]) is SkipReason.PROCESSING
    assert skip_for_jobs(policy, record, [_job(JobStatus.PENDING)]) is SkipReason.PROCESSING
    assert skip_for_jobs(policy, record, [_job(JobStatus.FAILED)]) is None
    assert skip_for_jobs(processed_only, record, []) is SkipReason.UNPROCESSED
    done, failed = _job(JobStatus.DONE), _job(JobStatus.FAILED, processor="transcribe")
    assert skip_for_jobs(processed_only, record, [done, failed]) is SkipReason.UNPROCESSED
    assert skip_for_jobs(processed_only, record, [done]) is None
    # Another version's jobs say nothing about this one.
    assert skip_for_jobs(policy, record, [_job(JobStatus.RUNNING, version="v2")]) is None


def test_minio_has_the_last_word() -> None:
    cutoff = NOW - timedelta(days=30)
    old = NOW - timedelta(days=31)
    record = _record()
    fine = StoredFacts(etag="e1", size=10, last_modified=old)
    assert skip_for_stored(record, fine, cutoff, NOW) is None
    assert skip_for_stored(record, None, cutoff, NOW) is SkipReason.GONE
    changed = StoredFacts(etag="e2", size=10, last_modified=old)
    assert skip_for_stored(record, changed, cutoff, NOW) is SkipReason.CHANGED
    young = StoredFacts(etag="e1", size=10, last_modified=NOW - timedelta(days=1))
    assert skip_for_stored(record, young, cutoff, NOW) is SkipReason.TOO_RECENT
    held = StoredFacts(etag="e1", size=10, last_modified=old, legal_hold=True)
    assert skip_for_stored(record, held, cutoff, NOW) is SkipReason.LEGAL_HOLD
    locked = StoredFacts(etag="e1", size=10, last_modified=old, retain_until=NOW + timedelta(1))
    assert skip_for_stored(record, locked, cutoff, NOW) is SkipReason.RETENTION
    lapsed = StoredFacts(etag="e1", size=10, last_modified=old, retain_until=NOW - timedelta(1))
    assert skip_for_stored(record, lapsed, cutoff, NOW) is None


def test_object_lock_headers_are_read_case_insensitively() -> None:
    facts = stored_facts(
        '"e1"',
        10,
        NOW,
        {
            "X-Amz-Object-Lock-Mode": "GOVERNANCE",
            "X-Amz-Object-Lock-Retain-Until-Date": "2026-12-01T00:00:00.000Z",
            "x-amz-object-lock-legal-hold": "ON",
        },
    )
    assert facts.etag == "e1"
    assert facts.retain_until == datetime(2026, 12, 1, tzinfo=UTC)
    assert facts.legal_hold
    plain = stored_facts("e1", 10, NOW, {"Content-Type": "audio/ogg"})
    assert (plain.retain_until, plain.legal_hold) == (None, False)


def test_what_a_failed_delete_entry_means() -> None:
    worm = "Object is WORM protected and cannot be overwritten"
    assert delete_error_outcome("AccessDenied", worm) == (Outcome.SKIPPED, "retention")
    assert delete_error_outcome("ObjectLocked") == (Outcome.SKIPPED, "retention")
    assert delete_error_outcome("AccessDenied", "Access Denied.") == (
        Outcome.FAILED,
        "AccessDenied",
    )
    assert delete_error_outcome("NoSuchVersion") == (Outcome.SKIPPED, "gone")
    assert delete_error_outcome("InternalError") == (Outcome.FAILED, "InternalError")


def test_the_pacer_spreads_deletions_to_the_rate() -> None:
    pacer = Pacer(rate=10)
    assert pacer.delay(5, now=100.0) == 0.0  # the first batch goes at once
    assert pacer.delay(5, now=100.1) == pytest.approx(0.4)  # 5 sent: next at 100.5
    assert pacer.delay(10, now=103.0) == 0.0  # idle since 101: goes at once
    assert pacer.delay(1, now=103.0) == pytest.approx(1.0)  # idle time earned no credit


def test_a_lagging_indexer_blocks_the_sweep_with_a_reason() -> None:
    assert lag_block(10, 10, "indexer", "events") is None
    reason = lag_block(11, 10, "indexer", "events")
    assert reason is not None
    assert "11 event(s) behind events" in reason
    assert "RETENTION_MAX_LAG=10" in reason


def test_lag_counts_from_the_first_retained_offset_without_a_commit() -> None:
    ends, begins = {0: 100, 1: 50, 2: 10}, {0: 0, 1: 20, 2: 0}
    assert lag_by_partition(ends, begins, {0: 90, 1: None}) == {0: 10, 1: 30, 2: 10}
    # A commit older than what the topic still holds counts from the first retained offset.
    assert lag_by_partition({0: 100}, {0: 80}, {0: 5}) == {0: 20}
    assert lag_by_partition({0: 100}, {0: 0}, {0: 100}) == {0: 0}


def test_the_report_sums_outcomes_and_reasons() -> None:
    report = SweepReport(dry_run=False)
    for outcome, reason, size in (
        (Outcome.DELETED, None, 5),
        (Outcome.DELETED, None, 7),
        (Outcome.SKIPPED, "retention", 3),
        (Outcome.FAILED, "InternalError", 1),
    ):
        report.add(SweepItem("p", "b", "k", "", size, None, outcome, reason))
    summary = report.summary()
    assert (summary["deleted"], summary["deleted_bytes"]) == (2, 12)
    assert summary["skipped_by_reason"] == {"retention": 1}
    assert summary["failed"] == 1


# --- audit -----------------------------------------------------------------------------


def _removal(user_agent: str | None, event_name: str = "s3:ObjectRemoved:Delete") -> JournalRecord:
    return JournalRecord(
        id=1,
        bucket="audio",
        key="tmp/x.ogg",
        version_id="",
        event_name=event_name,
        kind=event_kind_of(event_name, user_agent),
        event_time=NOW,
        sequencer="1",
        principal_id="consumer-key",
        source_ip="127.0.0.1",
        user_agent=user_agent,
        request_id=None,
        size=None,
        etag=None,
        kafka=None,
        recorded_at=NOW,
    )


def test_the_sweepers_deletions_are_expiries_that_name_their_policy() -> None:
    agent = "MinIO (Linux; x86_64) minio-py/7.2.20 voxpersona-retention/old-interviews"
    assert event_kind_of("s3:ObjectRemoved:Delete", agent) is EventKind.EXPIRED
    assert retention_policy_of(agent) == "old-interviews"
    assert retention_policy_of("curl/8.0 not-voxpersona-retention/x") is None
    assert retention_policy_of(None) is None
    cause = deletion_cause(_removal(agent), [])
    assert (cause.actor, cause.policy) == ("sweeper", "old-interviews")


def test_lifecycle_and_client_deletions_are_told_apart() -> None:
    policies = [_policy(name="scratch", prefix="tmp/", days=1)]
    ilm = deletion_cause(_removal("Internal: [ILM-Expiry]"), policies)
    assert (ilm.actor, ilm.policy) == ("lifecycle", "scratch")
    client = deletion_cause(_removal("MinIO (linux) mc/2024"), policies)
    assert (client.actor, client.policy) == ("client", None)


# --- metrics ---------------------------------------------------------------------------


def _points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, str], ...]], int]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = tuple(sorted((k, str(v)) for k, v in point.attributes.items()))
                    found[(metric.name, attributes)] = int(point.value)  # type: ignore[union-attr]
    return found


def test_metrics_count_expired_objects_bytes_skips_by_reason_and_errors() -> None:
    reader = InMemoryMetricReader()
    metrics = RetentionMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    for outcome, reason, size in (
        (Outcome.DELETED, None, 5),
        (Outcome.DELETED, None, 7),
        (Outcome.WOULD_DELETE, None, 100),
        (Outcome.SKIPPED, "legal_hold", 3),
        (Outcome.FAILED, "InternalError", 1),
    ):
        metrics.item(SweepItem("p", "b", "k", "", size, None, outcome, reason))
    metrics.sweep("blocked")
    metrics.lag(42)
    points = _points(reader)
    where = (("bucket", "b"), ("policy", "p"))
    assert points[("retention.objects.expired", where)] == 2
    assert points[("retention.expired", where)] == 12
    skipped = (("bucket", "b"), ("policy", "p"), ("reason", "legal_hold"))
    assert points[("retention.objects.skipped", skipped)] == 1
    assert points[("retention.errors", where)] == 1
    assert points[("retention.sweeps", (("result", "blocked"),))] == 1
    assert points[("retention.indexer.lag", ())] == 42
