"""One object's story, oldest first, for the support person asked "what happened to my
recording?": every journaled event (what, who, when, from which Kafka position or which
repair), every processing job (attempts, error, duration, where the result went) and the
retention decisions (who removed it and under which policy, which policies apply to it).

Read from the index's journal and jobs; building the story is pure (``build_history``),
``load_history`` is the one place that reads. ``VoxClient.history`` and the CLI's
``history`` verb are both thin callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from consumer.errors import NotFound
from consumer.events import RECONCILE_FOUND, EventKind
from consumer.index import IndexStore, JobRecord, JournalRecord
from consumer.retention.audit import REMOVAL_KINDS, deletion_cause
from consumer.retention.policy import RetentionPolicy

# The journal of one key is read whole up to this many entries (the newest kept).
MAX_ENTRIES: Final = 100_000
# An unversioned bucket's objects have this version id in the index.
UNVERSIONED: Final = ""


@dataclass(frozen=True)
class HistoryEntry:
    """One step of the story."""

    at: datetime
    source: str  # "journal", "job" or "retention"
    version_id: str
    what: str  # the event name, "transcribe done", "removed by the sweeper"…
    who: str | None = None  # principal, source IP and user agent, as MinIO reported them
    origin: str | None = None  # "topic/partition@offset", "repair (reconcile)", a result key
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, versions: Sequence[str]) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "source": self.source,
            "version": version_label(self.version_id, versions),
            "version_id": self.version_id,
            "what": self.what,
            "who": self.who,
            "origin": self.origin,
            **self.details,
        }


@dataclass(frozen=True)
class ObjectHistory:
    """One object's story as ``VoxClient.history`` returns it: every step oldest first,
    the versions seen and the retention policies that cover the key."""

    bucket: str
    key: str
    entries: tuple[HistoryEntry, ...]
    # Every version seen, oldest first ("" for an unversioned bucket's one object).
    versions: tuple[str, ...]
    # The retention policies that cover the key, as "name: description (enforced by …)".
    policies: tuple[str, ...]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per entry, oldest first."""
        return [entry.as_dict(self.versions) for entry in self.entries]


def version_label(version_id: str, versions: Sequence[str]) -> str:
    """``v1``, ``v2``… in the order versions appeared; ``-`` for an unversioned object."""
    if version_id == UNVERSIONED:
        return "-"
    try:
        return f"v{versions.index(version_id) + 1}"
    except ValueError:
        return version_id


def _who(record: JournalRecord) -> str | None:
    parts = [
        part
        for part in (
            record.principal_id,
            f"from {record.source_ip}" if record.source_ip else None,
            f"({record.user_agent})" if record.user_agent else None,
        )
        if part
    ]
    return " ".join(parts) or None


def _origin(record: JournalRecord) -> str:
    if record.kafka is not None:
        return f"{record.kafka.topic}/{record.kafka.partition}@{record.kafka.offset}"
    if record.kind is EventKind.RECONCILED:
        found = record.event_name == RECONCILE_FOUND
        return "repair (reconcile: " + ("found in the bucket)" if found else "gone from it)")
    return "not from Kafka"


def event_entries(record: JournalRecord, policies: Sequence[RetentionPolicy]) -> list[HistoryEntry]:
    """The journaled event; a removal adds the retention decision behind it. Pure."""
    details: dict[str, Any] = {
        "principal_id": record.principal_id,
        "source_ip": record.source_ip,
        "user_agent": record.user_agent,
        "request_id": record.request_id,
        "size": record.size,
        "etag": record.etag,
        "sequencer": record.sequencer,
        "recorded_at": record.recorded_at.isoformat(),
    }
    if record.kafka is not None:
        details["kafka"] = {
            "topic": record.kafka.topic,
            "partition": record.kafka.partition,
            "offset": record.kafka.offset,
        }
    entries = [
        HistoryEntry(
            at=record.event_time,
            source="journal",
            version_id=record.version_id,
            what=record.event_name,
            who=_who(record),
            origin=_origin(record),
            details=details,
        )
    ]
    if record.kind in REMOVAL_KINDS:
        cause = deletion_cause(record, policies)
        by = {"sweeper": "the retention sweeper", "lifecycle": "MinIO lifecycle"}
        what = f"removed by {by.get(cause.actor, 'a client')}"
        entries.append(
            HistoryEntry(
                at=record.event_time,
                source="retention",
                version_id=record.version_id,
                what=what + (f" (policy {cause.policy})" if cause.policy else ""),
                details={"actor": cause.actor, "policy": cause.policy},
            )
        )
    return entries


def job_summary(job: JobRecord) -> str:
    """``transcribe failed (3 attempts, 1520 ms): <error>``. Pure."""
    facts = [f"{job.attempts} attempt{'s' if job.attempts != 1 else ''}"]
    if job.duration_ms is not None:
        facts.append(f"{job.duration_ms} ms")
    error = f": {job.last_error}" if job.last_error else ""
    return f"{job.processor} {job.status} ({', '.join(facts)}){error}"


def job_entry(job: JobRecord) -> HistoryEntry:
    """A processing job at its end (or where it stands). Pure."""
    result = (
        f"{job.result_bucket}/{job.result_key}" if job.result_bucket and job.result_key else None
    )
    return HistoryEntry(
        at=job.finished_at or job.started_at or job.created_at,
        source="job",
        version_id=job.version_id,
        what=job_summary(job),
        origin=result,
        details={
            "processor": job.processor,
            "status": str(job.status),
            "attempts": job.attempts,
            "error": job.last_error,
            "duration_ms": job.duration_ms,
            "result": result,
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        },
    )


def build_history(
    bucket: str,
    key: str,
    journal: Sequence[JournalRecord],
    jobs: Sequence[JobRecord],
    policies: Sequence[RetentionPolicy],
    *,
    version_id: str | None = None,
) -> ObjectHistory:
    """The story of ``bucket/key`` (of one version with ``version_id``), oldest first;
    journal order (its ids) breaks ties between events of the same time. Pure."""
    oldest_first = sorted(journal, key=lambda record: (record.event_time, record.id))
    versions = tuple(dict.fromkeys(record.version_id for record in oldest_first))
    entries = [entry for record in oldest_first for entry in event_entries(record, policies)]
    entries += [job_entry(job) for job in jobs]
    if version_id is not None:
        entries = [entry for entry in entries if entry.version_id == version_id]
    order = {"journal": 0, "retention": 1, "job": 2}
    entries.sort(key=lambda entry: (entry.at, order[entry.source]))
    covering = tuple(
        f"{policy.name}: {policy.describe()} (enforced by {policy.enforcement})"
        for policy in policies
        if policy.covers(bucket, key)
    )
    return ObjectHistory(bucket, key, tuple(entries), versions, covering)


async def load_history(
    store: IndexStore,
    bucket: str,
    key: str,
    policies: Sequence[RetentionPolicy],
    *,
    version_id: str | None = None,
) -> ObjectHistory:
    """Read the key's journal and jobs and build its story. Raises NotFound when the
    index knows nothing of it (of that version)."""
    journal = await store.journal(bucket=bucket, key=key, limit=MAX_ENTRIES)
    jobs = [job for job in await store.jobs(bucket=bucket, key=key) if job.key == key]
    journal = [record for record in journal if record.key == key]
    history = build_history(bucket, key, journal, jobs, policies, version_id=version_id)
    if not history.entries:
        which = f" version {version_id}" if version_id is not None else ""
        raise NotFound(f"{bucket}/{key}{which}: the index has no history of it")
    return history
