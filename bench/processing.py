"""Processing benchmark: probe throughput on small files, and peak memory on a > 1 GB file.

    python -m bench.processing [--files 300] [--big-gb 1.1] [--out bench/results]

Needs the running stack (``python -m infra.stack up``; endpoints from its ``env``).

1. **Throughput**: ``--files`` small recordings (OGG/Opus, MP3, FLAC, M4A, WAV; 1–3 s) are
   uploaded to a scratch bucket; their MinIO events are copied from the events topic into
   a private topic, and ``python -m consumer run --role processor --burst`` (audio-probe
   only, PROCESSING_CONCURRENCY 4 and 1) processes them. Objects/s = jobs done / wall time
   of the run (process start included, so it is a floor).
2. **Memory**: a WAV of ``--big-gb`` GB (a real header, then silence) is uploaded, and the
   same processor run probes it; its peak RSS (the child's VmHWM) is compared with
   a run on one small file. The probe reads ranges, so the two should be about equal.

Results go to ``<out>/processing.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from minio import Minio
from minio.deleteobjects import DeleteObject

from consumer.index import JobStatus, open_index
from consumer.minio import minio_client
from consumer.settings import Settings
from consumer.setup.notify_config import load_notify_config
from consumer.setup.provisioning import ensure_notifications
from infra.stack import Stack
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


def _settings(env: dict[str, str], **more: str) -> Settings:
    return Settings(_env_file=None, **{**env, **more})  # type: ignore[arg-type]


async def _copy_bucket_events(
    bootstrap: str, source: str, target: str, bucket: str, start: dict[int, int], want: int
) -> None:
    """Copy the events about ``bucket`` (published after ``start``) into ``target``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in start]
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


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def _run_processor(env: dict[str, str], topic: str, concurrency: int) -> tuple[float, int]:
    """One `run --role processor --burst` over ``topic``; (seconds, peak RSS in KiB)."""
    index = Path(tempfile.mkdtemp(prefix="bench-proc-")) / "index.sqlite3"
    child_env = {
        **os.environ,
        **env,
        "KAFKA_EVENTS_TOPIC": topic,
        "KAFKA_PROCESSOR_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "INDEX_URL": f"sqlite:///{index}",
        "PROCESSING_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": "warning",
    }
    child_env.pop("TRANSCRIBE_BASE_URL", None)
    started = time.perf_counter()
    peak_kib = 0
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
    settings = _settings(env, INDEX_URL=f"sqlite:///{index}")
    asyncio.run(_check_done(settings))
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


async def _check_done(settings: Settings) -> None:
    async with open_index(settings.index_url) as store:
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
    notify = load_notify_config(REPO / "minio-notify.json", settings)
    rules = notify.for_bucket(settings.minio_audio_bucket_name)
    ensure_notifications(client, bucket, rules, notify.target.arn)
    return bucket


def _remove_bucket(client: Minio, bucket: str) -> None:
    doomed = [
        DeleteObject(o.object_name or "") for o in client.list_objects(bucket, recursive=True)
    ]
    for error in client.remove_objects(bucket, doomed):
        print(f"cleanup: {error}", file=sys.stderr)
    client.remove_bucket(bucket)


def _upload_and_copy(
    env: dict[str, str], client: Minio, bucket: str, files: list[tuple[str, Any, int, str]]
) -> str:
    """Upload ``files`` (key, stream, length, type); their events into a private topic."""
    bootstrap, events = (
        env["KAFKA_BOOTSTRAP_SERVERS"],
        env.get("KAFKA_EVENTS_TOPIC", "minio-events"),
    )
    topic = f"bench-proc-{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 4, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    start = asyncio.run(_end_offsets(bootstrap, events))
    for key, stream, length, content_type in files:
        client.put_object(
            bucket, key, stream, length, content_type=content_type, part_size=64 * 1024**2
        )
    asyncio.run(_copy_bucket_events(bootstrap, events, topic, bucket, start, len(files)))
    return topic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.processing", description=__doc__)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--big-gb", type=float, default=1.1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    env = Stack().env()
    env.pop("POSTGRES_URL", None)
    results = f"bench-results-{uuid.uuid4().hex[:8]}"
    env["MINIO_RESULTS_BUCKET_NAME"] = results
    settings = _settings(env)
    client = minio_client(settings)
    client.make_bucket(results)
    buckets = [results]
    rows: list[tuple[str, str]] = []
    try:
        bucket = _scratch_bucket(client, settings)
        buckets.append(bucket)
        env["MINIO_AUDIO_BUCKET_NAME"] = bucket
        small = [(k, io.BytesIO(b), len(b), t) for k, b, t in _small_files(args.files)]
        topic = _upload_and_copy(env, client, bucket, small)
        for concurrency in (1, 4):
            seconds, rss = _run_processor(env, topic, concurrency)
            rate = args.files / seconds
            name = f"probe {args.files} small files, concurrency {concurrency}"
            figure = f"{rate:.1f} objects/s ({seconds:.1f} s), peak RSS {rss / 1024:.0f} MiB"
            print(f"{name}: {figure}", flush=True)
            rows.append((name, figure))

        big_bucket = _scratch_bucket(client, settings)
        buckets.append(big_bucket)
        env["MINIO_AUDIO_BUCKET_NAME"] = big_bucket
        size = int(args.big_gb * 1024**3)
        one_small = [("small.wav", io.BytesIO(audio.wav(2.0)), len(audio.wav(2.0)), "audio/wav")]
        small_topic = _upload_and_copy(env, client, big_bucket, one_small)
        _, small_rss = _run_processor(env, small_topic, 1)
        print(f"uploading {size / 1024**3:.2f} GiB WAV …", flush=True)
        big_topic = _upload_and_copy(
            env, client, big_bucket, [("big.wav", Silence(size), size, "audio/wav")]
        )
        seconds, big_rss = _run_processor(env, big_topic, 1)
        print(f"probe of a {size / 1024**3:.2f} GiB WAV: {seconds:.1f} s, peak RSS "
              f"{big_rss / 1024:.0f} MiB (one 2 s file: {small_rss / 1024:.0f} MiB)")  # fmt: skip
        rows.append((f"probe of one {size / 1024**3:.2f} GiB WAV",
                     f"peak RSS {big_rss / 1024:.0f} MiB in {seconds:.1f} s"))  # fmt: skip
        rows.append(
            ("probe of one 2 s WAV (same run shape)", f"peak RSS {small_rss / 1024:.0f} MiB")
        )
        rows.append(("RSS difference, big − small", f"{(big_rss - small_rss) / 1024:+.0f} MiB"))
    finally:
        for name in buckets:
            _remove_bucket(client, name)
    _write_report(args.out / "processing.md", rows, args)
    return 0


def _write_report(path: Path, rows: list[tuple[str, str]], args: argparse.Namespace) -> None:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    lines = [
        "# Processing benchmark",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M UTC} with `python -m bench.processing "
        f"--files {args.files} --big-gb {args.big_gb}` on {cpu}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Each figure is one `python -m consumer run "
        "--role processor --burst` process (audio-probe only; MinIO, Kafka and SQLite on "
        "the same machine), timed from process start, so rates are floors.",
        "",
        "| measurement | result |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Peak RSS is the processor process' `VmHWM`, polled every 50 ms while it runs. The",
        "probe reads a file through ranged GETs (256 KiB blocks, at most 8 cached), so a",
        "file's size should not show in the processor's memory.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
