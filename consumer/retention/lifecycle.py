"""Lifecycle (ILM) rules for the policies MinIO can enforce itself. Pure; ``setup`` applies
them (consumer/provisioning.py).

Each lifecycle policy becomes one rule whose ID carries our marker. Setup replaces only
rules with that marker and keeps every other rule of the bucket (someone else put them
there), writes only when something differs, and reads the configuration back to check that
MinIO stored what was asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import (
    Expiration,
    LifecycleConfig,
    NoncurrentVersionExpiration,
    Rule,
)

from consumer.retention.policy import Enforcement, RetentionPolicy, by_enforcement

RULE_ID_PREFIX: Final = "voxpersona-retention:"

# What identifies a rule for comparison: id, status, prefix, expiry days, noncurrent days.
RuleKey = tuple[str, str, str, int | None, int | None]


def rule_id(policy: RetentionPolicy) -> str:
    return f"{RULE_ID_PREFIX}{policy.name}"


def is_ours(rule: Rule) -> bool:
    return (rule.rule_id or "").startswith(RULE_ID_PREFIX)


def desired_rules(policies: Iterable[RetentionPolicy], bucket: str) -> list[Rule]:
    """The lifecycle rules ``bucket`` should carry for ``policies``.

    Expiration removes the current version after the age (on a versioned bucket: hides it
    behind a delete marker); NoncurrentVersionExpiration then removes the versions that
    have been non-current that long, so a versioned bucket does not keep the data anyway.
    """
    return [
        Rule(
            ENABLED,
            rule_filter=Filter(prefix=policy.prefix),
            rule_id=rule_id(policy),
            expiration=Expiration(days=policy.days),
            noncurrent_version_expiration=NoncurrentVersionExpiration(noncurrent_days=policy.days),
        )
        for policy in by_enforcement(list(policies), Enforcement.LIFECYCLE)
        if policy.bucket == bucket
    ]


def rule_key(rule: Rule) -> RuleKey:
    prefix = rule.rule_filter.prefix if rule.rule_filter is not None else None
    expiration = rule.expiration.days if rule.expiration is not None else None
    noncurrent = (
        rule.noncurrent_version_expiration.noncurrent_days
        if rule.noncurrent_version_expiration is not None
        else None
    )
    return (rule.rule_id or "", rule.status, prefix or "", expiration, noncurrent)


def our_keys(config: LifecycleConfig | None) -> list[RuleKey]:
    rules = config.rules if config is not None else []
    return sorted(rule_key(rule) for rule in rules if is_ours(rule))


def merge_lifecycle(
    current: LifecycleConfig | None, desired: Sequence[Rule]
) -> LifecycleConfig | None:
    """The configuration to write, or None when ``current`` already carries ``desired``.

    An empty configuration (no foreign rules, no policies left) is returned as a config
    with no rules: the caller deletes the bucket's lifecycle then.
    """
    if our_keys(current) == sorted(map(rule_key, desired)):
        return None
    foreign = [rule for rule in (current.rules if current else []) if not is_ours(rule)]
    return LifecycleConfig([*foreign, *desired])
