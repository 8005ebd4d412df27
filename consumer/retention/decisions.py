"""The sweeper's decisions, pure: which expired objects it keeps and why, what MinIO's
answers mean, how fast it may delete, and the report of a pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from consumer.index import JobRecord, JobStatus, ObjectRecord
from consumer.minio.failures import S3_CODES, FailureKind
from consumer.retention.policy import RetentionPolicy

# A multi-object delete refused by object lock: MinIO answers AccessDenied with a message
# about WORM protection (the code alone also means "no permission", which is a failure);
# ObjectLocked is what newer S3 implementations send.
LOCKED_CODE: Final = "ObjectLocked"
LOCKED_MESSAGE_MARKERS: Final = ("WORM", "retention", "legal hold")
# A delete entry refused because its object (version) is no longer there.
GONE_CODES: Final = frozenset(code for code, kind in S3_CODES.items() if kind is FailureKind.GONE)


class SkipReason(StrEnum):
    """Why an expired object was kept."""

    PROCESSING = "processing"  # a processing job is pending or running
    UNPROCESSED = "unprocessed"  # the policy waits for processing, which is not done
    GONE = "gone"  # not in MinIO any more (its removal event is on its way)
    CHANGED = "changed"  # MinIO holds other content than the index knows
    TOO_RECENT = "too_recent"  # MinIO's Last-Modified is within the policy's age
    RETENTION = "retention"  # object-lock retention in force
    LEGAL_HOLD = "legal_hold"  # object-lock legal hold on


class Outcome(StrEnum):
    WOULD_DELETE = "would_delete"  # dry run: this object would be deleted
    DELETED = "deleted"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class StoredFacts:
    """What MinIO says about one object version (a HEAD request)."""

    etag: str
    size: int
    last_modified: datetime
    retain_until: datetime | None = None  # object-lock retention, any mode
    legal_hold: bool = False


@dataclass(frozen=True)
class SweepItem:
    """One expired object and what the sweeper did with it."""

    policy: str
    bucket: str
    key: str
    version_id: str
    size: int | None
    last_modified: datetime | None
    outcome: Outcome
    reason: str | None = None

    def fields(self) -> dict[str, Any]:
        """For ``--json`` and the table."""
        return {
            "policy": self.policy,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "size": self.size,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "outcome": str(self.outcome),
            "reason": self.reason,
        }


@dataclass
class SweepReport:
    """A pass in numbers. ``blocked`` says why nothing was deleted, when it was blocked."""

    dry_run: bool
    blocked: str | None = None
    lag: int | None = None
    objects: Counter[str] = field(default_factory=Counter)  # by outcome
    bytes: Counter[str] = field(default_factory=Counter)  # by outcome
    skipped: Counter[str] = field(default_factory=Counter)  # by reason

    def add(self, item: SweepItem) -> None:
        self.objects[item.outcome] += 1
        self.bytes[item.outcome] += item.size or 0
        if item.outcome is Outcome.SKIPPED and item.reason:
            self.skipped[item.reason] += 1

    def summary(self) -> dict[str, Any]:
        """Flat fields for the log line and the CLI's last line."""
        return {
            "dry_run": self.dry_run,
            "blocked": self.blocked,
            "indexer_lag": self.lag,
            "would_delete": self.objects[Outcome.WOULD_DELETE],
            "deleted": self.objects[Outcome.DELETED],
            "deleted_bytes": self.bytes[Outcome.DELETED],
            "skipped": self.objects[Outcome.SKIPPED],
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "failed": self.objects[Outcome.FAILED],
        }


def lag_block(lag: int, max_lag: int, group_id: str, topic: str) -> str | None:
    """Why the sweep must not delete, when the indexer is too far behind to trust the
    index (an object it lists may have been overwritten, re-tagged or already deleted)."""
    if lag <= max_lag:
        return None
    return (
        f"the indexer (group {group_id}) is {lag} event(s) behind {topic}, more than "
        f"RETENTION_MAX_LAG={max_lag}: the index may be stale, nothing deleted"
    )


def skip_for_jobs(
    policy: RetentionPolicy, record: ObjectRecord, jobs: Sequence[JobRecord]
) -> SkipReason | None:
    """Processing comes first: never delete what a job is reading, and with
    ``only_processed`` keep everything whose jobs are not all done."""
    mine = [job for job in jobs if job.version_id == record.version_id]
    if any(job.status in (JobStatus.PENDING, JobStatus.RUNNING) for job in mine):
        return SkipReason.PROCESSING
    if policy.only_processed and (
        not mine or any(job.status is not JobStatus.DONE for job in mine)
    ):
        return SkipReason.UNPROCESSED
    return None


def skip_for_stored(
    record: ObjectRecord, stored: StoredFacts | None, cutoff: datetime, now: datetime
) -> SkipReason | None:
    """MinIO has the last word: the index may lag, and object lock lives only there."""
    if stored is None:
        return SkipReason.GONE
    if record.etag and stored.etag != record.etag:
        return SkipReason.CHANGED
    if stored.last_modified > cutoff:
        return SkipReason.TOO_RECENT
    if stored.legal_hold:
        return SkipReason.LEGAL_HOLD
    if stored.retain_until is not None and stored.retain_until > now:
        return SkipReason.RETENTION
    return None


def stored_facts(
    etag: str, size: int, last_modified: datetime, headers: Mapping[str, str]
) -> StoredFacts:
    """StoredFacts from a HEAD response (``headers`` looked up case-insensitively)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    until = lowered.get("x-amz-object-lock-retain-until-date")
    return StoredFacts(
        etag=etag.strip('"'),
        size=size,
        last_modified=last_modified,
        retain_until=datetime.fromisoformat(until) if until else None,
        legal_hold=lowered.get("x-amz-object-lock-legal-hold", "").upper() == "ON",
    )


def delete_error_outcome(code: str, message: str = "") -> tuple[Outcome, str]:
    """How one failed entry of a multi-object delete counts: locked objects are kept (the
    HEAD said they were not, but a lock can be set in between), a permission refusal or
    any other error is a failure."""
    lowered = message.lower()
    if code == LOCKED_CODE or (
        code == "AccessDenied" and any(m.lower() in lowered for m in LOCKED_MESSAGE_MARKERS)
    ):
        return Outcome.SKIPPED, SkipReason.RETENTION.value
    if code in GONE_CODES:
        return Outcome.SKIPPED, SkipReason.GONE.value
    return Outcome.FAILED, code


class Pacer:
    """Spreads deletions to at most ``rate`` objects per second: before each batch,
    ``delay(count, now)`` says how long to wait. Idle time earns no credit, so a late
    batch never lets the next ones burst above the rate."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._free_at: float | None = None  # when the previous batches' share is used up

    def delay(self, count: int, now: float) -> float:
        start = now if self._free_at is None else max(self._free_at, now)
        self._free_at = start + count / self._rate
        return start - now
