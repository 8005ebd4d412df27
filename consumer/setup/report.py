"""What setup reports, one line per resource, and how a MinIO failure during setup becomes
the error it raises: shared by the provisioning of buckets, notifications and topics and
by the identities' provisioning."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from consumer.errors import ConnectionFailed, ConsumerError, SetupFailed
from consumer.minio import MinioFailure, as_error


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    WARNING = "warning"


@dataclass(frozen=True)
class Change:
    """One line of setup's report."""

    resource: str  # "bucket", "notification", "lifecycle", "topic"
    name: str
    action: Action
    detail: str = ""


def setup_error(failure: MinioFailure, refusal: str) -> ConsumerError:
    """A MinIO failure during setup: ConnectionFailed when no answer came (network, TLS:
    the line says which), else SetupFailed saying ``refusal``."""
    if not failure.answered:
        return as_error(failure, "", ConnectionFailed)
    return SetupFailed(refusal)
