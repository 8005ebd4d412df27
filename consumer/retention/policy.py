"""Retention policies: which objects expire after how long, and who enforces each policy.

Pure apart from reading the policies file. A policy names a bucket and a key prefix, an age,
and optionally a metadata filter and "only once processing is done". MinIO's lifecycle
(ILM) can express "bucket + prefix + whole days", so such a policy becomes a bucket
lifecycle rule applied by ``setup``; a policy with a metadata filter, a processed-only
condition or an age in seconds is beyond ILM and is enforced by the sweeper over the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consumer.config_file import load_json_file
from consumer.settings import Settings

# The sweeper's user agent names the policy, so a deletion's event (and the journal) says
# why it happened; the name must therefore be a plain token.
POLICY_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
DEFAULT_POLICY_NAME: Final = "cleanup"


class Enforcement(StrEnum):
    LIFECYCLE = "lifecycle"  # a bucket lifecycle rule; MinIO's scanner deletes
    SWEEPER = "sweeper"  # the retention role deletes, after its safety checks


class RetentionPolicy(BaseModel):
    """One policy of the policies file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=POLICY_NAME_PATTERN)
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    days: int | None = Field(None, ge=1, le=36_500)
    # For tests and drills: ages in seconds cannot be lifecycle rules, so the sweeper
    # enforces them.
    seconds: int | None = Field(None, ge=1)
    # Only objects whose user metadata has all these values (names compared lower-cased,
    # as MinIO reports them).
    metadata: dict[str, str] = Field(default_factory=dict)
    # Only objects whose every processing job is done (objects never processed stay).
    only_processed: bool = False

    @field_validator("metadata")
    @classmethod
    def _lower_names(cls, value: dict[str, str]) -> dict[str, str]:
        return {name.strip().lower(): text for name, text in value.items()}

    @model_validator(mode="after")
    def _one_age(self) -> RetentionPolicy:
        if (self.days is None) == (self.seconds is None):
            raise ValueError("give exactly one of days or seconds")
        return self

    @property
    def max_age(self) -> timedelta:
        if self.days is not None:
            return timedelta(days=self.days)
        return timedelta(seconds=self.seconds or 0)

    @property
    def enforcement(self) -> Enforcement:
        if self.days is not None and not self.metadata and not self.only_processed:
            return Enforcement.LIFECYCLE
        return Enforcement.SWEEPER

    def covers(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)

    def fields(self) -> dict[str, Any]:
        """For ``retention policies``."""
        return {
            "name": self.name,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "days": self.days,
            "seconds": self.seconds,
            "metadata": dict(self.metadata),
            "only_processed": self.only_processed,
            "enforcement": str(self.enforcement),
        }

    def describe(self) -> str:
        """One line for people: what goes after how long."""
        age = f"{self.days} day(s)" if self.days is not None else f"{self.seconds} s"
        where = f"{self.bucket}/{self.prefix}*"
        filters = [f"{name}={value}" for name, value in sorted(self.metadata.items())]
        if self.only_processed:
            filters.append("processing done")
        condition = f" where {', '.join(filters)}" if filters else ""
        return f"{where} older than {age}{condition}"


class _PoliciesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: tuple[RetentionPolicy, ...]

    @model_validator(mode="after")
    def _unique_names(self) -> _PoliciesFile:
        names = [policy.name for policy in self.policies]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"policy names must be unique: {', '.join(duplicated)}")
        return self


def default_policies(settings: Settings) -> tuple[RetentionPolicy, ...]:
    """Without a policies file: the seeds' cleanup (MINIO_CLEANUP_DAYS, 0 = off) of the
    general storage bucket. Recordings in the audio bucket are never removed by default;
    that takes an explicit policy."""
    if settings.minio_cleanup_days <= 0:
        return ()
    return (
        RetentionPolicy(
            name=DEFAULT_POLICY_NAME,
            bucket=settings.minio_bucket_name,
            days=settings.minio_cleanup_days,
        ),
    )


def load_policies(settings: Settings) -> tuple[RetentionPolicy, ...]:
    """The policies of RETENTION_POLICIES_FILE, or the default. Raises ConfigError."""
    path = settings.retention_policies_file
    if path is None:
        return default_policies(settings)
    return load_json_file(path, _PoliciesFile, "RETENTION_POLICIES_FILE").policies


def by_enforcement(
    policies: Sequence[RetentionPolicy], enforcement: Enforcement
) -> tuple[RetentionPolicy, ...]:
    return tuple(policy for policy in policies if policy.enforcement is enforcement)


def policy_named(policies: Sequence[RetentionPolicy], name: str) -> RetentionPolicy | None:
    return next((policy for policy in policies if policy.name == name), None)


def lifecycle_policy_for(
    policies: Sequence[RetentionPolicy], bucket: str, key: str
) -> RetentionPolicy | None:
    """The lifecycle policy that most likely expired ``bucket/key`` (MinIO's expiry event
    does not name its rule): the one with the longest matching prefix."""
    matching = [
        policy
        for policy in by_enforcement(policies, Enforcement.LIFECYCLE)
        if policy.covers(bucket, key)
    ]
    return max(matching, key=lambda policy: len(policy.prefix), default=None)
