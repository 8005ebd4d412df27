"""Processing benchmark: probe throughput on small files, and peak memory on a > 1 GB file.

    python -m bench.processing [--files 300] [--big-gb 1.1] [--out bench/results]

Needs the running stack (``python -m infra.stack up``); run by ``python -m bench``.

1. **Throughput**: ``--files`` small recordings (OGG/Opus, MP3, FLAC, M4A, WAV; 1–3 s) are
   uploaded to a scratch bucket; their MinIO events are copied from the events topic into
   a private topic, and ``python -m consumer run --role processor --burst`` (audio-probe
   only, PROCESSING_CONCURRENCY 4 and 1) processes them. Objects/s = jobs done / wall time
   of the run (process start included, so it is a floor).
2. **Memory**: a WAV of ``--big-gb`` GB (a real header, then silence) is uploaded, and the
   same processor run probes it; its peak RSS (the child's VmHWM) is compared with
   a run on one small file. The probe reads ranges, so the two should be about equal.

Results go to ``<out>/processing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from minio import Minio
from minio.deleteobjects import DeleteObject

from bench.clients import end_offsets
from bench.prefill import create_topic
from bench.stack_env import settings_for, stack_values
from bench.templates import wire_notifications
from consumer.index import JobStatus, open_index
from consumer.kafka.clients import new_consumer, new_producer
from consumer.minio import minio_client
from consumer.settings import Settings
from tests import audio

REPO = Path(__file__).resolve().parent.parent
FORMATS = [
    ("opus", ".ogg", "audio/ogg"),
    ("mp3", ".mp3", "audio/mpeg"),
    ("flac", ".flac", "audio/flac"),
    ("m4a", ".m4a", "audio/mp4"),
    ("wav", ".wav", "audio/wav"),
]


class Silence(io.RawIOBase):
    """``size`` bytes: a WAV header for 16-bit mono 16 kHz, then zeros, made on the fly."""

    def __init__(self, size: int) -> None:
        super().__init__()
        data = size - 44
        self._header = (
            b"RIFF" + struct.pack("<I", size - 8) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16)
            + b"data" + struct.pack("<I", data)
        )  # fmt: skip
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._size - self._position)
        if count <= 0:
            return 0
        view = memoryview(buffer)[:count]
        view[:] = b"\0" * count
        header_left = len(self._header) - self._position
        if header_left > 0:
            n = min(header_left, count)
            view[:n] = self._header[self._position : self._position + n]
        self._position += count
        return count


async def _copy_bucket_events(
    settings: Settings, target: str, bucket: str, start: dict[int, int], want: int
) -> None:
    """Copy the events about ``bucket`` (published after ``start``) into ``target``."""
    consumer = new_consumer(settings, client_id="bench-processing", enable_auto_commit=False)
    producer = new_producer(settings, client_id="bench-processing", linger_ms=20)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(settings.kafka_events_topic, p) for p in start]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        copied, deadline = 0, time.monotonic() + 120
        while copied < want:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {copied}/{want} events arrived from MinIO")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if json.loads(record.value)["Key"].split("/", 1)[0] == bucket:
                        await producer.send(target, record.value, key=record.key)
                        copied += 1
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()


def _run_processor(values: dict[str, str], topic: str, concurrency: int) -> tuple[float, int]:
    """One `run --role processor --burst` over ``topic``; (seconds, peak RSS in KiB)."""
    directory = Path(tempfile.mkdtemp(prefix="bench-proc-"))
    index_url = f"sqlite:///{directory / 'index.sqlite3'}"
    child_env = {
        **{k: v for k, v in os.environ.items() if k != "TRANSCRIBE_BASE_URL"},
        **values,
        "KAFKA_EVENTS_TOPIC": topic,
        "KAFKA_PROCESSOR_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "INDEX_URL": index_url,
        "PROCESSING_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": "warning",
    }
    started = time.perf_counter()
    peak_kib = 0
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--role", "processor", "--burst"],
            env=child_env,
            cwd=REPO,
        ) as child:
            # VmHWM of the child itself, polled while it runs: ru_maxrss would carry the
            # parent's peak across fork/exec on Linux.
            while child.poll() is None:
                peak_kib = max(peak_kib, _vm_hwm_kib(child.pid))
                time.sleep(0.05)
        elapsed = time.perf_counter() - started
        if child.returncode != 0:
            raise SystemExit(f"processor run failed with exit {child.returncode}")
        asyncio.run(_check_done(index_url))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return elapsed, peak_kib


def _vm_hwm_kib(pid: int) -> int:
    """The process' peak resident set so far (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return 0


async def _check_done(index_url: str) -> None:
    async with open_index(index_url) as store:
        jobs = await store.jobs(limit=100_000)
    failed = [j for j in jobs if j.status is not JobStatus.DONE]
    if not jobs or failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} jobs did not end done: {failed[:3]}")


def _small_files(count: int) -> Iterator[tuple[str, bytes, str]]:
    bodies = {}
    for name, suffix, content_type in FORMATS:
        bodies[name] = (
            audio.wav(2.0) if name == "wav" else audio.encoded(name, 2.0),
            suffix,
            content_type,
        )
    for n in range(count):
        name = FORMATS[n % len(FORMATS)][0]
        body, suffix, content_type = bodies[name]
        yield f"user_{n % 17}/take {n:05}{suffix}", body, content_type


def _scratch_bucket(client: Minio, settings: Settings) -> str:
    bucket = f"bench-audio-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    wire_notifications(client, settings, bucket)
    return bucket


def _remove_bucket(client: Minio, bucket: str) -> None:
    doomed = [
        DeleteObject(o.object_name or "") for o in client.list_objects(bucket, recursive=True)
    ]
    for error in client.remove_objects(bucket, doomed):
        print(f"cleanup: {error}", file=sys.stderr)
    client.remove_bucket(bucket)


def _upload_and_copy(
    settings: Settings, client: Minio, bucket: str, files: list[tuple[str, Any, int, str]]
) -> str:
    """Upload ``files`` (key, stream, length, type); their events into a private topic."""
    topic = f"bench-proc-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(settings, topic))
    start = asyncio.run(end_offsets(settings, settings.kafka_events_topic))
    for key, stream, length, content_type in files:
        client.put_object(
            bucket, key, stream, length, content_type=content_type, part_size=64 * 1024**2
        )
    asyncio.run(_copy_bucket_events(settings, topic, bucket, start, len(files)))
    return topic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.processing", description=__doc__)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--big-gb", type=float, default=1.1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    values = {k: v for k, v in stack_values().items() if k != "POSTGRES_URL"}
    values["MINIO_RESULTS_BUCKET_NAME"] = f"bench-results-{uuid.uuid4().hex[:8]}"
    settings = settings_for(values)
    client = minio_client(settings)
    client.make_bucket(settings.minio_results_bucket_name)
    buckets = [settings.minio_results_bucket_name]
    try:
        small = _small_runs(values, client, buckets, args.files)
        big = _big_run(values, client, buckets, int(args.big_gb * 1024**3))
    finally:
        for name in buckets:
            _remove_bucket(client, name)
    document = {"files": args.files, "big_gb": args.big_gb, "small": small, **big}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "processing.json"
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _small_runs(
    values: dict[str, str], client: Minio, buckets: list[str], files: int
) -> list[dict[str, float]]:
    """The probe over ``files`` small recordings, at concurrency 1 and 4."""
    bucket = _scratch_bucket(client, settings_for(values))
    buckets.append(bucket)
    values = {**values, "MINIO_AUDIO_BUCKET_NAME": bucket}
    small = [(k, io.BytesIO(b), len(b), t) for k, b, t in _small_files(files)]
    topic = _upload_and_copy(settings_for(values), client, bucket, small)
    runs = []
    for concurrency in (1, 4):
        seconds, rss_kib = _run_processor(values, topic, concurrency)
        run = {
            "concurrency": concurrency,
            "objects_per_s": round(files / seconds, 1),
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(rss_kib / 1024),
        }
        print(f"probe of {files} small files: {run}", flush=True)
        runs.append(run)
    return runs


def _big_run(
    values: dict[str, str], client: Minio, buckets: list[str], size: int
) -> dict[str, dict[str, float]]:
    """The probe's peak RSS on one big WAV, next to the same run on one 2 s WAV."""
    bucket = _scratch_bucket(client, settings_for(values))
    buckets.append(bucket)
    values = {**values, "MINIO_AUDIO_BUCKET_NAME": bucket}
    settings = settings_for(values)
    body = audio.wav(2.0)
    one_small = [("small.wav", io.BytesIO(body), len(body), "audio/wav")]
    _, small_kib = _run_processor(values, _upload_and_copy(settings, client, bucket, one_small), 1)
    print(f"uploading {size / 1024**3:.2f} GiB WAV …", flush=True)
    big = [("big.wav", Silence(size), size, "audio/wav")]
    seconds, big_kib = _run_processor(values, _upload_and_copy(settings, client, bucket, big), 1)
    result = {
        "big": {"gib": round(size / 1024**3, 2), "seconds": round(seconds, 1)}
        | {"peak_rss_mib": round(big_kib / 1024)},
        "one_small": {"seconds": 2.0, "peak_rss_mib": round(small_kib / 1024)},
    }
    print(f"probe of one big and one small WAV: {result}", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
