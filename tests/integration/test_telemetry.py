"""Telemetry against the real stack: one upload carrying a traceparent reads as one trace
(upload → index → processing → MinIO calls); ``/metrics`` of a running consumer counts the
uploads it indexed; ``/readyz`` follows Kafka going away and coming back; the logs are
JSON lines with trace ids and without any credential."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from consumer.health import HealthReporter, HealthServer
from consumer.index import open_index
from consumer.indexer import Indexer
from consumer.processing.probe import AudioProbe
from consumer.processing.worker import ProcessorWorker
from consumer.telemetry import traceparent_of
from infra.stack import Stack
from tests import audio
from tests.conftest import REPO_ROOT, StackEndpoints, unique_name
from tests.helpers import Published, committed_offsets, topic_end_offsets, until_async
from tests.integration.test_cli_e2e import cli_env

pytestmark = pytest.mark.integration


async def test_an_upload_with_a_traceparent_reads_as_one_trace(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    tmp_path: Path,
    spans: InMemorySpanExporter,
) -> None:
    bucket = make_bucket("traced")
    results = make_bucket("results", notify_events=False)
    group, processor_group = unique_name("g"), unique_name("p")
    settings = stack.settings(
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        MINIO_AUDIO_BUCKET_NAME=bucket,
        MINIO_RESULTS_BUCKET_NAME=results,
        KAFKA_GROUP_ID=group,
        KAFKA_PROCESSOR_GROUP_ID=processor_group,
    )
    body = audio.wav(seconds=0.5)
    published = Published(stack)
    await published.mark()
    with trace.get_tracer("the-bot").start_as_current_span("upload recording") as upload:
        minio.put_object(
            bucket,
            "user_7/traced.wav",
            io.BytesIO(body),
            len(body),
            content_type="audio/wav",
            metadata={"traceparent": traceparent_of(upload) or ""},
        )
    minio.put_object(bucket, "user_7/plain.wav", io.BytesIO(body), len(body), "audio/wav")
    await published.wait(bucket, 2)
    async with open_index(settings.index_url) as store:
        await asyncio.wait_for(Indexer(settings, store).run(burst=True), timeout=120)
        worker = ProcessorWorker(settings, store, {"audio-probe": AudioProbe()})
        await asyncio.wait_for(worker.run(burst=True), timeout=120)

    finished = spans.get_finished_spans()
    upload_trace = upload.get_span_context().trace_id
    in_trace = [s for s in finished if s.context is not None and s.context.trace_id == upload_trace]
    names = {s.name for s in in_trace}
    assert {"upload recording", "index event", "process audio-probe", "attempt"} <= names
    assert {"S3.HeadObject", "S3.GetObject", "S3.PutObject"} <= names

    def attributes_of(name: str, key: str | None = None) -> dict[str, Any]:
        (span,) = [
            s
            for s in in_trace
            if s.name == name and (key is None or (s.attributes or {}).get("aws.s3.key") == key)
        ]
        return dict(span.attributes or {})

    indexed = attributes_of("index event", "user_7/traced.wav")
    assert indexed["messaging.system"] == "kafka"
    assert indexed["messaging.destination.name"] == stack.events_topic
    assert indexed["messaging.consumer.group.name"] == group
    assert isinstance(indexed["messaging.kafka.offset"], int)
    assert indexed["messaging.destination.partition.id"].isdigit()
    assert indexed["aws.s3.bucket"] == bucket
    assert indexed["voxpersona.object.size"] == len(body)
    assert indexed["voxpersona.event.kind"] == "created"
    processed = attributes_of("process audio-probe")
    assert processed["messaging.consumer.group.name"] == processor_group
    assert processed["voxpersona.job.outcome"] == "done"
    assert processed["aws.s3.key"] == "user_7/traced.wav"

    # The event's span hangs under the upload and links to the batch that indexed it.
    (index_span,) = [s for s in in_trace if s.name == "index event"]
    assert index_span.parent is not None
    assert index_span.parent.span_id == upload.get_span_context().span_id
    batch_ids = {s.context.span_id for s in finished if s.name == f"process {stack.events_topic}"}
    assert {link.context.span_id for link in index_span.links} <= batch_ids
    assert index_span.links
    # The untraced upload is indexed inside its batch's own trace, next to the index write.
    (plain,) = [
        s
        for s in finished
        if s.name == "index event"
        and (s.attributes or {}).get("aws.s3.key") == "user_7/plain.wav"
        and (s.attributes or {}).get("aws.s3.bucket") == bucket
    ]
    assert plain.parent is not None
    assert plain.parent.span_id in batch_ids
    writes = [s for s in finished if s.name == "index write"]
    assert writes
    assert all((s.attributes or {}).get("db.system.name") == "sqlite" for s in writes)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_indexer(env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    """``run --role indexer`` with its output in files (a pipe nobody reads would block)."""
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--role", "indexer"],
            env=env,
            cwd=REPO_ROOT,
            stdout=stdout,
            stderr=stderr,
        )


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def test_metrics_count_the_uploads_and_logs_are_clean_json(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("metrics")
    group = unique_name("g")
    port = _free_port()
    env = cli_env(stack, tmp_path, group) | {
        "HEALTH_PORT": str(port),
        "LOG_LEVEL": "debug",
        "OTEL_TRACES_EXPORTER": "console",
        "MINIO_AUDIO_BUCKET_NAME": bucket,
        "MINIO_HEALTH_CHECK_INTERVAL": "0.5",
        "MINIO_METRICS_INTERVAL_S": "1",
    }
    bootstrap, topic = stack.values["KAFKA_BOOTSTRAP_SERVERS"], stack.events_topic
    base = f"http://127.0.0.1:{port}"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    run = _start_indexer(env, out, err)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:

            async def caught_up() -> bool:
                ends = await topic_end_offsets(bootstrap, topic)
                done = await committed_offsets(bootstrap, group, topic, len(ends))
                return all(done.get(p, 0) >= end for p, end in ends.items())

            async def serving() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.ConnectError:
                    return False

            # On a fresh topic the group is "caught up" before the process even listens.
            await until_async(serving, "the health server never listened", timeout_s=60)
            await until_async(caught_up, "the consumer never caught up", timeout_s=60)
            before = (await http.get("/metrics")).text

            published = Published(stack)
            await published.mark()
            sizes = [3, 5, 7, 11, 13]
            for number, size in enumerate(sizes):
                minio.put_object(bucket, f"user_1/{number}.ogg", io.BytesIO(b"x" * size), size)
            await published.wait(bucket, len(sizes))
            await until_async(caught_up, "the uploads were never indexed", timeout_s=60)

            async def storage_counted() -> bool:
                text = (await http.get("/metrics")).text
                return _metric(text, "index_objects", bucket=bucket) == len(sizes)

            await until_async(storage_counted, "index_objects never showed the bucket")
            ready = await http.get("/readyz")
            status = await http.get("/status")
            after = (await http.get("/metrics")).text
            assert (await http.get("/healthz")).json() == {"status": "alive"}
    finally:
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0

    def moved(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert moved("consumer_events_total", group=group, kind="created") == len(sizes)
    # Every event indexed has its delay measured (other tests' late events included).
    assert moved("index_delay_seconds_count") == moved("consumer_events_total", group=group)
    # ... and split in MinIO's delivery and the consumer's part, for each of them.
    assert moved("index_delay_minio_seconds_count") == moved("index_delay_seconds_count")
    assert moved("index_delay_consumer_seconds_count") == moved("index_delay_seconds_count")
    # MinIO's queue for the notify target, read by the indexer role (its numbers lag by
    # MinIO's 10 s cache: test_minio_notify_queue.py follows them).
    for name in ("queue_length", "failed_events", "total_events"):
        assert f'minio_notify_{name}{{target="VOXPERSONA"}}' in after, name
    assert moved("index_batch_duration_seconds_count", backend="sqlite") >= 1
    assert _metric(after, "index_size_bytes", bucket=bucket) == sum(sizes)
    assert _metric(after, "minio_operations_total", operation="HeadBucket", outcome="ok") >= 1
    assert _metric(after, "consumer_lag", group=group) == 0

    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    report = status.json()
    assert report["connection_status"] == "connected"
    assert set(report["connections"]) == {"kafka", "index", "minio"}
    assert report["success_rate"] == 100.0
    assert report["operations_total"] >= 1
    assert report["workers"]["indexer"]["events"] >= len(sizes)
    assert isinstance(report["dlq_messages"], int)
    queue = report["minio_queue"]
    assert (queue["target"], queue["error"], queue["degraded"]) == ("VOXPERSONA", None, None)
    assert queue["total_events"] >= queue["queue_length"] >= 0
    # How long the reading has not changed (a queue that holds events and does not move).
    assert isinstance(queue["unchanged_s"], float)
    assert queue["unchanged_s"] >= 0

    logs = err.read_text().splitlines()
    records = [json.loads(line) for line in logs if line.strip()]
    assert any(r.get("event") == "health server listening" for r in records)
    traced = [r for r in records if r.get("event") == "batch indexed"]
    assert traced
    assert all(len(r["trace_id"]) == 32 and len(r["span_id"]) == 16 for r in traced)
    everything = err.read_text() + out.read_text()
    assert "index event" in out.read_text(), "the console exporter printed the spans"
    for secret in (stack.values["MINIO_SECRET_KEY"], stack.values["MINIO_ACCESS_KEY"]):
        assert secret not in everything


async def test_readyz_turns_unready_without_kafka_and_ready_when_it_returns(
    stack: StackEndpoints, stack_control: Stack, tmp_path: Path
) -> None:
    settings = stack.settings(INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}")
    async with open_index(settings.index_url) as store:
        server = HealthServer("127.0.0.1", 0, HealthReporter(settings, store))
        await server.start()
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{server.port}", timeout=30
            ) as http:
                assert (await http.get("/readyz")).status_code == 200
                await asyncio.to_thread(stack_control.stop_server, "kafka")
                try:
                    # Answers are kept HEALTH_CACHE_S: the next one checks again.
                    await asyncio.sleep(settings.health_cache_s)
                    down = await http.get("/readyz")
                    assert down.status_code == 503
                    checks = down.json()["checks"]
                    assert checks["kafka"]["ok"] is False
                    assert checks["kafka"]["error"]
                    assert checks["index"]["ok"] is True
                    assert checks["minio"]["ok"] is True
                    status = await http.get("/status")
                    assert status.status_code == 503
                    assert status.json()["connection_status"] == "disconnected"
                    assert (await http.get("/healthz")).status_code == 200
                finally:
                    await asyncio.to_thread(stack_control.start_server, "kafka")

                async def ready() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await until_async(ready, "never ready again after Kafka returned", 90)
        finally:
            await server.close()
