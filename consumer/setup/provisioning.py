"""``setup``: make MinIO and Kafka look the way minio-notify.json and the settings say.

Idempotent: each step reads the current state first and changes only what differs, and
reports what it did, so a second run reports "unchanged" everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from minio import Minio
from minio.helpers import md5sum_hash
from minio.notificationconfig import (
    NotificationConfig,
    PrefixFilterRule,
    QueueConfig,
    SuffixFilterRule,
)

from consumer.errors import SetupFailed
from consumer.kafka.clients import new_admin, start_client
from consumer.minio import MINIO_ERRORS, MinioFailure, classify_failure, minio_client
from consumer.retention.lifecycle import (
    current_keys,
    desired_rules,
    foreign_count,
    rule_key,
    splice_lifecycle,
)
from consumer.retention.policy import (
    Enforcement,
    RetentionPolicy,
    by_enforcement,
    load_policies,
)
from consumer.settings import Settings
from consumer.setup.notify_config import NotifyConfig, NotifyRule, load_notify_config
from consumer.setup.report import Action, Change, setup_error

if TYPE_CHECKING:
    from consumer.setup.identities import IdentityOptions


# --------------------------------------------------------------------------------------
# Pure: desired notification state and its comparison with what the server has
# --------------------------------------------------------------------------------------

_RuleKey = tuple[str, str, tuple[str, ...], str, str]


def queue_configs_for(rules: Iterable[NotifyRule], arn: str) -> list[QueueConfig]:
    """The minio-py QueueConfigs that express ``rules`` for the target ``arn``."""
    return [
        QueueConfig(
            queue=arn,
            events=list(rule.events),
            config_id=rule.id,
            prefix_filter_rule=PrefixFilterRule(rule.prefix) if rule.prefix else None,
            suffix_filter_rule=SuffixFilterRule(rule.suffix) if rule.suffix else None,
        )
        for rule in rules
    ]


def _rule_key(config: QueueConfig) -> _RuleKey:
    prefix = config.prefix_filter_rule.value if config.prefix_filter_rule else ""
    suffix = config.suffix_filter_rule.value if config.suffix_filter_rule else ""
    return (
        config.config_id or "",
        config.queue or "",
        tuple(sorted(config.events)),
        prefix or "",
        suffix or "",
    )


def merge_notification(
    current: NotificationConfig, desired: Sequence[QueueConfig], arn: str
) -> NotificationConfig | None:
    """The configuration to write, or None when ``current`` already matches.

    Our target's queue configs are replaced by ``desired``; everything else on the bucket
    (other targets, topic/lambda configs) is kept, since someone else put it there.
    """
    ours = [config for config in current.queue_config_list if config.queue == arn]
    if sorted(map(_rule_key, ours)) == sorted(map(_rule_key, desired)):
        return None
    foreign = [config for config in current.queue_config_list if config.queue != arn]
    return NotificationConfig(
        cloud_func_config_list=current.cloud_func_config_list,
        queue_config_list=[*foreign, *desired],
        topic_config_list=current.topic_config_list,
    )


# --------------------------------------------------------------------------------------
# I/O: MinIO
# --------------------------------------------------------------------------------------


def ensure_bucket(client: Minio, bucket: str, region: str) -> Change:
    if client.bucket_exists(bucket):
        return Change("bucket", bucket, Action.UNCHANGED)
    client.make_bucket(bucket, location=region)
    return Change("bucket", bucket, Action.CREATED)


def ensure_notifications(
    client: Minio, bucket: str, rules: Sequence[NotifyRule], arn: str
) -> Change:
    """Apply ``rules`` for ``arn`` to ``bucket``; a no-op when they are already there."""
    desired = queue_configs_for(rules, arn)
    current = client.get_bucket_notification(bucket)
    merged = merge_notification(current, desired, arn)
    if merged is None:
        return Change("notification", bucket, Action.UNCHANGED, f"{len(desired)} rule(s)")
    client.set_bucket_notification(bucket, merged)
    action = (
        Action.UPDATED
        if any(c.queue == arn for c in current.queue_config_list)
        else (Action.CREATED)
    )
    return Change("notification", bucket, action, f"{len(desired)} rule(s) -> {arn}")


def ensure_lifecycle(client: Minio, bucket: str, policies: Sequence[RetentionPolicy]) -> Change:
    """Apply the lifecycle policies' rules to ``bucket``, keeping the bucket's other rules
    byte for byte; read back. Raises SetupFailed when MinIO does not store what was
    written."""
    desired = desired_rules(policies, bucket)
    wanted = sorted(map(rule_key, desired))
    current = _get_lifecycle_xml(client, bucket)
    document = splice_lifecycle(current, desired)
    detail = f"{len(desired)} retention rule(s)"
    if document is None:
        return Change("lifecycle", bucket, Action.UNCHANGED, detail)
    if document:
        client._execute(  # minio-py's setter would re-marshal other rules from its model
            "PUT",
            bucket,
            body=document,
            headers={"Content-MD5": md5sum_hash(document) or ""},
            query_params={"lifecycle": ""},
        )
    else:
        client.delete_bucket_lifecycle(bucket)
    stored = current_keys(_get_lifecycle_xml(client, bucket))
    if stored != wanted:
        raise SetupFailed(
            f"lifecycle of bucket {bucket}: MinIO stored {stored} where setup wrote {wanted}"
        )
    kept = foreign_count(current)
    if kept:
        detail += f", {kept} other rule(s) kept"
    action = Action.UPDATED if current_keys(current) else Action.CREATED
    return Change("lifecycle", bucket, action, detail)


def _get_lifecycle_xml(client: Minio, bucket: str) -> bytes | None:
    """The bucket's lifecycle document as MinIO stores it; None when it has none."""
    try:
        response = client._execute("GET", bucket, query_params={"lifecycle": ""})
    except MINIO_ERRORS as exc:
        if classify_failure(exc).code == "NoSuchLifecycleConfiguration":
            return None
        raise
    return bytes(response.data)


def provision_minio(
    client: Minio,
    settings: Settings,
    notify: NotifyConfig,
    policies: Sequence[RetentionPolicy] = (),
) -> list[Change]:
    """Buckets first, then their notifications and lifecycle rules. Raises SetupFailed /
    ConnectionFailed."""
    buckets = list(dict.fromkeys([*settings.managed_buckets, *(b.bucket for b in notify.buckets)]))
    changes: list[Change] = []
    try:
        for bucket in buckets:
            changes.append(ensure_bucket(client, bucket, settings.minio_region))
        for entry in notify.buckets:
            changes.append(
                ensure_notifications(client, entry.bucket, entry.rules, notify.target.arn)
            )
        for bucket in _lifecycle_buckets(buckets, policies):
            if client.bucket_exists(bucket):
                changes.append(ensure_lifecycle(client, bucket, policies))
            else:
                changes.append(
                    Change("lifecycle", bucket, Action.WARNING, "bucket missing, rules not set")
                )
    except MINIO_ERRORS as exc:
        failure = classify_failure(exc, settings)
        raise setup_error(failure, _describe_minio_error(failure, notify.target.arn)) from exc
    except ET.ParseError as exc:
        raise SetupFailed(f"MinIO answered a lifecycle document that is not XML: {exc}") from exc
    return changes


def _lifecycle_buckets(managed: Sequence[str], policies: Sequence[RetentionPolicy]) -> list[str]:
    """Buckets whose retention rules setup reconciles: every bucket a lifecycle policy
    names, and the managed ones (so a policy removed from the file loses its rule)."""
    named = [p.bucket for p in by_enforcement(policies, Enforcement.LIFECYCLE)]
    return list(dict.fromkeys([*managed, *named]))


def _describe_minio_error(failure: MinioFailure, arn: str) -> str:
    if "ARN" in failure.message:
        return (
            f"MinIO does not know the notify target {arn}: start it with "
            "MINIO_NOTIFY_KAFKA_ENABLE_<ID>=on (see infra/stack/minio.py) and make the id match "
            "minio-notify.json"
        )
    return failure.message


# --------------------------------------------------------------------------------------
# I/O: Kafka
# --------------------------------------------------------------------------------------


async def provision_topics(settings: Settings) -> list[Change]:
    """Create the events topic (partitioned by object key) and the DLQ if missing."""
    wanted = {
        settings.kafka_events_topic: settings.kafka_events_partitions,
        settings.kafka_dlq_topic: 1,
    }
    admin = new_admin(settings, client_id="voxpersona-setup", request_timeout_ms=15000)
    await start_client(admin, settings)
    try:
        return await _ensure_topics(admin, wanted, settings.kafka_replication_factor)
    except KafkaError as exc:
        raise SetupFailed(f"Kafka refused topic creation: {exc}") from exc
    finally:
        await admin.close()


async def _ensure_topics(
    admin: AIOKafkaAdminClient, wanted: dict[str, int], replication: int
) -> list[Change]:
    existing = set(await admin.list_topics())
    changes: list[Change] = []
    missing = [
        NewTopic(name, parts, replication) for name, parts in wanted.items() if name not in existing
    ]
    if missing:
        # Created concurrently by another setup: the end state is what we want.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(missing)
    present = [name for name in wanted if name in existing]
    partitions = await _partition_counts(admin, present) if present else {}
    for name, parts in wanted.items():
        if name not in existing:
            changes.append(Change("topic", name, Action.CREATED, f"{parts} partition(s)"))
        elif partitions.get(name, parts) < parts:
            # Adding partitions would move keys to other partitions and break per-object
            # order for in-flight events, so setup reports it instead of doing it.
            changes.append(
                Change(
                    "topic",
                    name,
                    Action.WARNING,
                    f"has {partitions[name]} partition(s), settings ask {parts}",
                )
            )
        else:
            changes.append(
                Change(
                    "topic", name, Action.UNCHANGED, f"{partitions.get(name, parts)} partition(s)"
                )
            )
    return changes


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(topics)
    return {entry["topic"]: len(entry["partitions"]) for entry in described}


# --------------------------------------------------------------------------------------
# The whole setup
# --------------------------------------------------------------------------------------


async def run_setup(settings: Settings, identities: IdentityOptions | None = None) -> list[Change]:
    """Topics, buckets, notifications, lifecycle rules, and with ``identities`` the
    least-privilege MinIO users and policies. Raises ConfigError, SetupFailed,
    ConnectionFailed."""
    notify = load_notify_config(settings.minio_notify_config, settings)
    policies = load_policies(settings)
    client = minio_client(settings)  # a bad MINIO_CERT_PATH stops setup before any change
    changes = await provision_topics(settings)
    changes += await asyncio.to_thread(provision_minio, client, settings, notify, policies)
    if identities is not None:
        # Imported here: consumer.setup.identities builds on this module's Change and Action.
        from consumer.setup.identities import provision_for_settings

        notified = [entry.bucket for entry in notify.buckets]
        changes += await asyncio.to_thread(
            provision_for_settings, settings, identities, notified, policies
        )
    return changes
