"""Lifecycle (ILM) rules for the policies MinIO can enforce itself. Pure; ``setup`` applies
them (consumer/setup/provisioning.py).

Each lifecycle policy becomes one rule whose ID carries our marker. Setup replaces only
rules with that marker and keeps every other rule of the bucket (someone else put them
there), writes only when something differs, and reads the configuration back to check that
MinIO stored what was asked.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Final

from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import (
    Expiration,
    NoncurrentVersionExpiration,
    Rule,
)

from consumer.retention.policy import Enforcement, RetentionPolicy, by_enforcement

RULE_ID_PREFIX: Final = "voxpersona-retention:"
S3_NAMESPACE: Final = "http://s3.amazonaws.com/doc/2006-03-01/"

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


# --- the XML setup writes: other rules kept byte for byte ------------------------------
#
# minio-py's model of a rule is narrower than S3's and MinIO's (no ObjectSizeGreaterThan,
# no rule-level Prefix, no DelMarkerExpiration…): writing a parsed copy back could widen
# someone else's rule to expire more than they asked. So setup never rewrites other rules:
# it keeps their XML elements as they came and replaces only ours.


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _rule_elements(document: bytes | None) -> list[ET.Element]:
    if not document:
        return []
    root = ET.fromstring(document)  # noqa: S314 - MinIO's own answer, not user input
    return [child for child in root if _local(child.tag) == "Rule"]


def _rule_id_of(element: ET.Element) -> str:
    return next((c.text or "" for c in element if _local(c.tag) == "ID"), "")


def current_keys(document: bytes | None) -> list[RuleKey]:
    """The keys of our rules in a stored lifecycle document."""
    ours = [e for e in _rule_elements(document) if _rule_id_of(e).startswith(RULE_ID_PREFIX)]
    return sorted(rule_key(Rule.fromxml(_without_namespace(e))) for e in ours)


def foreign_count(document: bytes | None) -> int:
    return sum(not _rule_id_of(e).startswith(RULE_ID_PREFIX) for e in _rule_elements(document))


def splice_lifecycle(document: bytes | None, desired: Sequence[Rule]) -> bytes | None:
    """The lifecycle document to write: ``document``'s other rules as they are, then
    ``desired``; None when nothing changes. b"" means "no rules left": delete it."""
    if current_keys(document) == sorted(map(rule_key, desired)):
        return None
    root = ET.Element("LifecycleConfiguration", {"xmlns": S3_NAMESPACE})
    for element in _rule_elements(document):
        if not _rule_id_of(element).startswith(RULE_ID_PREFIX):
            root.append(_without_namespace(element))
    for rule in desired:
        rule.toxml(root)
    if not len(root):
        return b""
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))


def _without_namespace(element: ET.Element) -> ET.Element:
    """A copy whose tags carry no namespace (the root declares the default one)."""
    copy = ET.Element(_local(element.tag), element.attrib)
    copy.text, copy.tail = element.text, element.tail
    for child in element:
        copy.append(_without_namespace(child))
    return copy
