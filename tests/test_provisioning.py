"""Pure part of setup: comparing and merging bucket notification configurations."""

from __future__ import annotations

from minio.notificationconfig import NotificationConfig, QueueConfig, TopicConfig

from consumer.setup.notify_config import NotifyRule
from consumer.setup.provisioning import merge_notification, queue_configs_for

ARN = "arn:minio:sqs::VOXPERSONA:kafka"
RULES = (
    NotifyRule(id="all", events=("s3:ObjectRemoved:*", "s3:ObjectCreated:*")),
    NotifyRule(id="ogg", events=("s3:ObjectCreated:Put",), prefix="in/", suffix=".ogg"),
)


def test_rules_become_queue_configs_with_filters() -> None:
    configs = queue_configs_for(RULES, ARN)
    assert [c.config_id for c in configs] == ["all", "ogg"]
    assert configs[0].prefix_filter_rule is None
    assert configs[1].prefix_filter_rule is not None
    assert configs[1].prefix_filter_rule.value == "in/"
    assert configs[1].suffix_filter_rule is not None
    assert configs[1].suffix_filter_rule.value == ".ogg"


def test_same_rules_in_another_order_need_no_write() -> None:
    current = NotificationConfig(queue_config_list=list(reversed(queue_configs_for(RULES, ARN))))
    assert merge_notification(current, queue_configs_for(RULES, ARN), ARN) is None


def test_changed_rule_is_rewritten_and_foreign_configs_are_kept() -> None:
    foreign_queue = QueueConfig(queue="arn:minio:sqs::OTHER:webhook", events=["s3:ObjectCreated:*"])
    foreign_topic = TopicConfig(topic="arn:aws:sns:::t", events=["s3:ObjectCreated:*"])
    stale = QueueConfig(queue=ARN, events=["s3:ObjectCreated:*"], config_id="all")
    current = NotificationConfig(
        queue_config_list=[foreign_queue, stale], topic_config_list=[foreign_topic]
    )
    desired = queue_configs_for(RULES, ARN)
    merged = merge_notification(current, desired, ARN)
    assert merged is not None
    assert merged.queue_config_list == [foreign_queue, *desired]
    assert merged.topic_config_list == [foreign_topic]


def test_empty_bucket_gets_the_rules() -> None:
    merged = merge_notification(NotificationConfig(), queue_configs_for(RULES, ARN), ARN)
    assert merged is not None
    assert len(merged.queue_config_list) == 2
