"""Capture real MinIO messages to clone: a scratch bucket, a few requests, read them back.

MinIO delivers from its queue dir asynchronously, so the reader polls the events topic
(from the offsets it had before the requests) until every expected message arrived.
The scratch bucket is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from minio import Minio
from minio.commonconfig import Tags
from minio.deleteobjects import DeleteObject

from bench.clients import end_offsets
from bench.generate import DELETE, PUT, PUT_TAGGING, TEMPLATE_EVENTS
from consumer.kafka.clients import new_consumer
from consumer.minio import minio_client
from consumer.settings import Settings
from consumer.setup.notify_config import load_notify_config
from consumer.setup.provisioning import ensure_notifications

# Keys with a space, a "+" and non-ASCII letters, so the captured record shows how MinIO
# escapes them (Go QueryEscape) next to the envelope's raw Key.
_OBJECTS: Final = (
    ("user_7/2026-11-21/first take.ogg", "7"),
    ("user_8/2026-11-21/запись 1+2 ü.ogg", "8"),
    ("user_9/2026-11-21/plain.ogg", "9"),
)
_EXPECTED_MESSAGES: Final = len(_OBJECTS) + 2  # the puts, one tagging, one delete
_CAPTURE_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class Captured:
    """One captured MinIO message: its Kafka key and parsed value."""

    key: bytes
    value: dict[str, Any]


def capture_templates(settings: Settings) -> dict[str, dict[str, Any]]:
    """One real MinIO message per event name in TEMPLATE_EVENTS. Raises RuntimeError when
    MinIO did not deliver them in time or keyed them differently than expected."""
    client = minio_client(settings)
    bucket = f"bench-capture-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    try:
        wire_notifications(client, settings, bucket)
        start = asyncio.run(end_offsets(settings, settings.kafka_events_topic))
        _make_events(client, bucket)
        captured = asyncio.run(_read_bucket_messages(settings, bucket, start))
    finally:
        _remove_bucket(client, bucket)
    return _pick_templates(captured, bucket)


def wire_notifications(client: Minio, settings: Settings, bucket: str) -> None:
    """Publish `bucket`'s events to our Kafka target with the audio bucket's rules."""
    notify = load_notify_config(settings.minio_notify_config, settings)
    rules = notify.for_bucket(settings.minio_audio_bucket_name)
    ensure_notifications(client, bucket, rules, notify.target.arn)


def _make_events(client: Minio, bucket: str) -> None:
    for key, user in _OBJECTS:
        body = f"audio of user {user}".encode()
        client.put_object(
            bucket,
            key,
            io.BytesIO(body),
            len(body),
            content_type="audio/ogg",
            metadata={"x-amz-meta-user-id": user, "x-amz-meta-session-type": "interview"},
        )
    tags = Tags.new_object_tags()
    tags["reviewed"] = "yes"
    client.set_object_tags(bucket, _OBJECTS[0][0], tags)
    client.remove_object(bucket, _OBJECTS[2][0])


def _remove_bucket(client: Minio, bucket: str) -> None:
    doomed = [
        DeleteObject(obj.object_name or "", obj.version_id)
        for obj in client.list_objects(bucket, recursive=True, include_version=True)
    ]
    for error in client.remove_objects(bucket, doomed):
        raise RuntimeError(f"cannot empty scratch bucket {bucket}: {error}")
    client.remove_bucket(bucket)


async def _read_bucket_messages(
    settings: Settings, bucket: str, start: Mapping[int, int]
) -> list[Captured]:
    """Messages about ``bucket`` after ``start``, polling until all expected arrived."""
    consumer = new_consumer(settings, client_id="bench-templates", enable_auto_commit=False)
    await consumer.start()
    found: list[Captured] = []
    try:
        tps = [TopicPartition(settings.kafka_events_topic, p) for p in start]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        deadline = time.monotonic() + _CAPTURE_TIMEOUT_S
        while len(found) < _EXPECTED_MESSAGES and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend(_about_bucket(records, bucket))
    finally:
        await consumer.stop()
    if len(found) < _EXPECTED_MESSAGES:
        raise RuntimeError(
            f"MinIO delivered {len(found)} of {_EXPECTED_MESSAGES} messages for {bucket} "
            f"within {_CAPTURE_TIMEOUT_S:.0f} s"
        )
    return found


def _about_bucket(records: list[ConsumerRecord[bytes, bytes]], bucket: str) -> list[Captured]:
    """The records whose envelope Key names ``bucket`` (the topic is shared)."""
    found = []
    for record in records:
        value = json.loads(record.value or b"{}")
        if str(value.get("Key", "")).startswith(f"{bucket}/"):
            found.append(Captured(record.key or b"", value))
    return found


def _pick_templates(captured: list[Captured], bucket: str) -> dict[str, dict[str, Any]]:
    """The first message of each template event name, after checking MinIO's keying."""
    templates: dict[str, dict[str, Any]] = {}
    for message in captured:
        envelope_key = message.value["Key"]
        if message.key != envelope_key.encode():
            raise RuntimeError(f"MinIO keyed {envelope_key!r} as {message.key!r}")
        if not envelope_key.startswith(f"{bucket}/"):
            raise RuntimeError(f"unexpected envelope Key {envelope_key!r}")
        templates.setdefault(message.value["EventName"], message.value)
    missing = [name for name in TEMPLATE_EVENTS if name not in templates]
    if missing:
        raise RuntimeError(
            f"no {missing} among captured {[m.value['EventName'] for m in captured]}"
        )
    return {name: templates[name] for name in (PUT, PUT_TAGGING, DELETE)}
