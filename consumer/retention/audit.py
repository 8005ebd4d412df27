"""Who deleted an object and why, read from its journaled removal event. Pure.

MinIO's removal events carry the deleting request's identity and user agent: lifecycle
expiry has the agent ``Internal: [ILM-Expiry]`` (and no rule name, so the policy is
inferred from bucket and prefix); the sweeper's agent names its policy; anything else is
a client's own delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from consumer.events import ILM_EXPIRY_AGENT, EventKind, retention_policy_of
from consumer.index import JournalRecord
from consumer.retention.policy import RetentionPolicy, lifecycle_policy_for

REMOVAL_KINDS: Final = frozenset({EventKind.REMOVED, EventKind.EXPIRED})


@dataclass(frozen=True)
class DeletionCause:
    actor: str  # "lifecycle", "sweeper" or "client"
    policy: str | None  # the retention policy behind it, when retention deleted


def deletion_cause(record: JournalRecord, policies: Sequence[RetentionPolicy]) -> DeletionCause:
    swept_by = retention_policy_of(record.user_agent)
    if swept_by is not None:
        return DeletionCause("sweeper", swept_by)
    if record.kind is EventKind.EXPIRED or (record.user_agent or "") == ILM_EXPIRY_AGENT:
        policy = lifecycle_policy_for(policies, record.bucket, record.key)
        return DeletionCause("lifecycle", policy.name if policy else None)
    return DeletionCause("client", None)


def audit_fields(record: JournalRecord, policies: Sequence[RetentionPolicy]) -> dict[str, Any]:
    """One removal as printed by ``retention audit``."""
    cause = deletion_cause(record, policies)
    return {
        "event_time": record.event_time.isoformat(),
        "bucket": record.bucket,
        "key": record.key,
        "version_id": record.version_id,
        "event_name": record.event_name,
        "actor": cause.actor,
        "policy": cause.policy,
        "principal_id": record.principal_id,
        "source_ip": record.source_ip,
        "user_agent": record.user_agent,
    }
