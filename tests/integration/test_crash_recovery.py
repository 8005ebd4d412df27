"""kill -9 of the consumer mid-stream, then a restart: the index equals the bucket and the
journal holds every event exactly once (the uncommitted batch is redelivered and deduped)."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio

from consumer.index import ObjectQuery, open_index
from tests.conftest import StackEndpoints, unique_name
from tests.helpers import count_rows, read_bucket_events, topic_end_offsets
from tests.integration.test_cli_e2e import REPO_ROOT, cli_env, run_cli

pytestmark = pytest.mark.integration

OBJECTS = 200


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("crash")
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    start = asyncio.run(topic_end_offsets(bootstrap, stack.events_topic))
    for n in range(OBJECTS):
        minio.put_object(bucket, f"user_1/take {n:03}.ogg", io.BytesIO(b"x" * n), n)
    found = asyncio.run(read_bucket_events(bootstrap, stack.events_topic, bucket, start, OBJECTS))
    assert len(found) == OBJECTS

    # One event per transaction so the kill lands between commits, not after the last one.
    env = {**cli_env(stack, tmp_path, unique_name("group")), "INDEXER_BATCH_MAX_RECORDS": "1"}
    index_file = tmp_path / "index.sqlite3"
    run = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--role", "indexer"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        indexed = 0
        while indexed == 0:
            assert time.monotonic() < deadline, "nothing was indexed"
            assert run.poll() is None, "run exited early"
            indexed = _count(index_file, bucket)
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)

    at_kill = _count(index_file, bucket)
    assert 0 < at_kill < OBJECTS, f"the kill should land mid-stream ({at_kill} indexed)"

    restarted = run_cli(env, "run", "--role", "indexer", "--burst", timeout_s=120)
    assert restarted.returncode == 0, restarted.stderr

    async def check() -> None:
        async with open_index(env["INDEX_URL"]) as store:
            rows = await store.list_objects(ObjectQuery(bucket=bucket))
            listing = {(o.object_name, o.size) for o in minio.list_objects(bucket, recursive=True)}
            assert {(r.key, r.size) for r in rows} == listing
            journal = await store.journal(bucket=bucket, limit=10 * OBJECTS)
            assert len(journal) == OBJECTS
            assert len({(j.key, j.sequencer) for j in journal}) == OBJECTS

    asyncio.run(check())


def _count(index_file: Path, bucket: str) -> int:
    return count_rows(index_file, "SELECT count(*) FROM objects WHERE bucket = ?", bucket)
