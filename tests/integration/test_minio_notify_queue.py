"""MinIO's queue for the notify target, read from the real server's metrics: the pinned
build's answer parses, its counters follow uploads, it tells its start time (restart
detection), and public mode reads without a token. The consumer identity's grant is
tested in test_identities.py."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import pytest
from minio import Minio

from bench.private_minio import PrivateMinio
from consumer.minio.notify_queue import MetricsUnreadable, NotifyQueue, NotifyQueueReader
from infra.stack import NOTIFY_TARGET_ID
from tests.conftest import StackEndpoints

pytestmark = pytest.mark.integration

# MinIO caches its metrics 10 s: a change shows within that (and a little).
CACHE_WAIT_S = 25.0


async def test_the_stack_minio_reports_its_queue_its_counters_and_its_start(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str]
) -> None:
    reader = NotifyQueueReader(stack.settings(), NOTIFY_TARGET_ID)
    before = await reader.read()
    assert before.started_at_s is not None
    assert before.started_at_s <= time.time()
    assert before.total_events >= before.failed_events + before.queue_length

    bucket = make_bucket("queue")
    for number in range(3):
        minio.put_object(bucket, f"{number}.bin", io.BytesIO(b"x"), 1)
    deadline = time.monotonic() + CACHE_WAIT_S
    after = await reader.read()
    while after.total_events < before.total_events + 3:
        assert time.monotonic() < deadline, f"total_events stayed {after.total_events}"
        await asyncio.sleep(1)
        after = await reader.read()
    assert after.started_at_s == before.started_at_s  # the same process: no restart


async def test_an_unknown_target_id_is_named(stack: StackEndpoints) -> None:
    with pytest.raises(MetricsUnreadable, match="for notify target 'NO_SUCH_TARGET'"):
        await NotifyQueueReader(stack.settings(), "NO_SUCH_TARGET").read()


async def test_public_mode_reads_without_a_token_and_says_when_the_server_wants_one(
    stack: StackEndpoints,
) -> None:
    server = PrivateMinio(
        stack.values, stack.events_topic, env={"MINIO_PROMETHEUS_AUTH_TYPE": "public"}
    )
    await asyncio.to_thread(server.start)
    try:
        public = stack.settings(
            MINIO_ENDPOINT=server.endpoint,
            MINIO_METRICS_AUTH="public",
            MINIO_SECRET_KEY="not-the-secret",  # no token is signed: the key is not used
        )
        queue = await _first_reading(NotifyQueueReader(public, NOTIFY_TARGET_ID))
        assert queue.queue_length == 0
    finally:
        await asyncio.to_thread(server.stop)
    wants_token = stack.settings(MINIO_METRICS_AUTH="public")
    with pytest.raises(MetricsUnreadable, match="set MINIO_METRICS_AUTH=jwt"):
        await NotifyQueueReader(wants_token, NOTIFY_TARGET_ID).read()


async def _first_reading(reader: NotifyQueueReader, timeout_s: float = 30) -> NotifyQueue:
    """The first reading that names the target: a MinIO just started registers its Kafka
    target a moment after it answers, and caches its metrics for 10 s (seen in CI: the
    target missing from the first answer). The consumer reads again next round alike."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await reader.read()
        except MetricsUnreadable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
