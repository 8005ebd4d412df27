"""`setup` against the real MinIO and Kafka: creates, then changes nothing the second time."""

from __future__ import annotations

import pytest
from minio import Minio
from minio.notificationconfig import NotificationConfig, QueueConfig

from consumer.setup.provisioning import run_setup
from consumer.setup.report import Action
from tests.conftest import StackEndpoints, _empty_and_remove_bucket, unique_name

pytestmark = pytest.mark.integration


async def test_setup_is_idempotent_and_keeps_foreign_rules(
    stack: StackEndpoints, minio: Minio
) -> None:
    names = {
        "MINIO_AUDIO_BUCKET_NAME": unique_name("audio"),
        "MINIO_BUCKET_NAME": unique_name("storage"),
        "MINIO_RESULTS_BUCKET_NAME": unique_name("results"),
        "KAFKA_EVENTS_TOPIC": unique_name("events"),
        "KAFKA_DLQ_TOPIC": unique_name("dlq"),
    }
    settings = stack.settings(**names)
    try:
        first = await run_setup(settings)
        created = {(c.resource, c.name) for c in first if c.action is Action.CREATED}
        assert ("topic", names["KAFKA_EVENTS_TOPIC"]) in created
        assert ("topic", names["KAFKA_DLQ_TOPIC"]) in created
        for bucket in settings.managed_buckets:
            assert ("bucket", bucket) in created
            assert ("notification", bucket) in created
            assert minio.bucket_exists(bucket)
            queue = minio.get_bucket_notification(bucket).queue_config_list
            assert {c.queue for c in queue} == {"arn:minio:sqs::VOXPERSONA:kafka"}

        second = await run_setup(settings)
        assert [c.action for c in second] == [Action.UNCHANGED] * len(second)
        assert len(second) == len(first)

        # A rule someone else added for our target with another id is replaced on the next
        # setup; the file is the source of truth for our target.
        audio = settings.minio_audio_bucket_name
        current = minio.get_bucket_notification(audio)
        extra = QueueConfig(
            queue="arn:minio:sqs::VOXPERSONA:kafka",
            events=["s3:ObjectAccessed:*"],
            config_id="manual",
        )
        minio.set_bucket_notification(
            audio, NotificationConfig(queue_config_list=[*current.queue_config_list, extra])
        )
        third = await run_setup(settings)
        changed = [
            (c.resource, c.name, c.action) for c in third if c.action is not Action.UNCHANGED
        ]
        assert changed == [("notification", audio, Action.UPDATED)]
        ids = {c.config_id for c in minio.get_bucket_notification(audio).queue_config_list}
        assert "manual" not in ids
    finally:
        for bucket in settings.managed_buckets:
            _empty_and_remove_bucket(minio, bucket)
