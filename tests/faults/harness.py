"""The fault suite's moving parts: seeded upload traffic through real MinIO, the consumer
as a real subprocess that can be killed, and the Kafka plumbing the scenarios need
(groups started at the topic's end, raw reads, replayed copies, poison).

Every part is bounded: counts are fixed per scenario, every wait has a deadline, and
every process or thread started here is stopped by its owner's ``close()``, which the
fixtures in ``conftest.py`` call also when a test fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import urllib3
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from minio import Minio

from tests import audio
from tests.conftest import REPO_ROOT
from tests.helpers import topic_end_offsets

# --------------------------------------------------------------------------------------
# Upload traffic
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One request of the traffic: a put of ``body`` or a delete of ``key``."""

    kind: Literal["put", "delete"]
    key: str
    body: bytes = b""
    content_type: str = "application/octet-stream"

    @property
    def audio(self) -> bool:
        return self.content_type.startswith("audio/")


def plan_traffic(rng: random.Random, count: int) -> list[Op]:
    """``count`` operations: new WAV recordings of varying length (processed by the probe,
    each key written once so each has one job), and binary blobs of varying size that are
    also overwritten and deleted (indexed only). Pure given the seeded ``rng``."""
    ops: list[Op] = []
    blobs: list[str] = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.4:
            seconds = rng.uniform(0.05, 0.5)
            body = audio.wav(seconds=seconds, rate=8_000)
            key = f"user_{n % 7}/take {n:04}.wav"
            ops.append(Op("put", key, body, "audio/wav"))
        elif roll < 0.55 and blobs:
            ops.append(Op("put", rng.choice(blobs), rng.randbytes(rng.randrange(0, 64_000))))
        elif roll < 0.65 and blobs:
            ops.append(Op("delete", blobs.pop(rng.randrange(len(blobs)))))
        else:
            key = f"blobs/{n:04}-ü.bin"
            blobs.append(key)
            ops.append(Op("put", key, rng.randbytes(rng.randrange(0, 200_000))))
    return ops


def expected_objects(done: Iterable[Op]) -> dict[str, tuple[int, str]]:
    """key → (size, etag) after the successful ``done`` operations, in order. Pure."""
    state: dict[str, tuple[int, str]] = {}
    for op in done:
        if op.kind == "put":
            state[op.key] = (len(op.body), hashlib.md5(op.body).hexdigest())
        else:
            state.pop(op.key, None)
    return state


def uploader_client(values: Mapping[str, str]) -> Minio:
    """A MinIO client that fails fast (short timeouts, no urllib3 retries): the uploader
    does its own retrying, so a stopped server shows up as failed attempts."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=15.0), retries=urllib3.Retry(total=0)
    )
    return Minio(
        values["MINIO_ENDPOINT"],
        access_key=values["MINIO_ACCESS_KEY"],
        secret_key=values["MINIO_SECRET_KEY"],
        secure=False,
        http_client=http,
    )


@dataclass
class Uploader:
    """Runs ``ops`` against ``bucket`` in a thread, ``pace_s`` apart, retrying each failed
    request (the server may be down) until ``op_deadline_s``. Only requests MinIO
    acknowledged count in ``done``; ``failed_attempts`` counts the refused tries."""

    client: Minio
    bucket: str
    ops: list[Op]
    pace_s: float = 0.05
    op_deadline_s: float = 90.0
    done: list[Op] = field(default_factory=list)
    failed_attempts: int = 0
    # key → the errors its requests met before one was acknowledged (diagnostics).
    errors: dict[str, list[str]] = field(default_factory=dict)
    error: BaseException | None = None
    _abort: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-uploader", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> None:
        """Wait for the traffic to end; raise what stopped it early."""
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"uploads not finished in {timeout_s} s"
        if self.error is not None:
            raise AssertionError(f"uploader failed: {self.error!r}") from self.error

    def close(self) -> None:
        self._abort.set()
        if self._thread is not None:
            self._thread.join(30)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def progress(self) -> int:
        return len(self.done)

    def _run(self) -> None:
        try:
            for op in self.ops:
                if self._abort.is_set():
                    return
                self._perform(op)
                self.done.append(op)
                time.sleep(self.pace_s)
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def _perform(self, op: Op) -> None:
        deadline = time.monotonic() + self.op_deadline_s
        while True:
            try:
                if op.kind == "put":
                    self.client.put_object(
                        self.bucket,
                        op.key,
                        io.BytesIO(op.body),
                        len(op.body),
                        content_type=op.content_type,
                    )
                else:
                    self.client.remove_object(self.bucket, op.key)
                return
            except Exception as exc:
                self.failed_attempts += 1
                self.errors.setdefault(op.key, []).append(f"{type(exc).__name__}: {exc}"[:200])
                if time.monotonic() > deadline or self._abort.is_set():
                    raise
                time.sleep(0.5)


# --------------------------------------------------------------------------------------
# The consumer as a subprocess
# --------------------------------------------------------------------------------------


class ConsumerProcess:
    """``python -m consumer run --role <role>`` in a child process that can be killed and
    started again; each start logs to its own file under ``log_dir``. ``wanted`` says
    whether it should be running now (started, and not stopped or killed since)."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, role: str = "all") -> None:
        self._env = dict(env)
        self._log_dir = log_dir
        self.role = role
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.wanted = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def start(self) -> None:
        assert not self.running, "already running"
        self.starts += 1
        self.wanted = True
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with (self._log_dir / f"run-{self.starts}.log").open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run", "--role", self.role],
                env=self._env,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def assert_alive(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        assert code is None, f"the consumer ({self.role}) exited with {code}:\n{self.log_tail()}"

    def kill9(self) -> None:
        assert self._process is not None
        self.assert_alive()
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=30)
        self.kills += 1
        self.wanted = False

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then its exit code (0 expected: a clean drain)."""
        assert self._process is not None
        self.wanted = False
        self._process.send_signal(signal.SIGTERM)
        return self._process.wait(timeout=timeout_s)

    def close(self) -> None:
        """Whatever still runs is killed (the finalizer's job, also after a failure)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in sorted(self._log_dir.glob("run-*.log"))
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines of every start (lines that are not JSON skipped: a kill may
        cut the last one)."""
        found = []
        for line in self.logs().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                found.append(entry)
        return found


# --------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def read_range(
    bootstrap: str,
    topic: str,
    start: Mapping[int, int] | None = None,
    *,
    timeout_s: float = 60,
) -> list[RawRecord]:
    """Every record from ``start`` (default: the beginning) to the partitions' current
    ends, in per-partition order."""
    ends = await topic_end_offsets(bootstrap, topic)
    first = {p: (start or {}).get(p, 0) for p in ends}
    wanted = [TopicPartition(topic, p) for p in ends if first[p] < ends[p]]
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    found: list[RawRecord] = []
    try:
        consumer.assign(wanted)
        for tp in wanted:
            consumer.seek(tp, first[tp.partition])
        position = dict(first)
        deadline = time.monotonic() + timeout_s
        while any(position[tp.partition] < ends[tp.partition] for tp in wanted):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < ends[tp.partition]:
                        headers = {k: v for k, v in m.headers}
                        found.append(RawRecord(tp.partition, m.offset, m.key, m.value, headers))
                    position[tp.partition] = m.offset + 1
    finally:
        await consumer.stop()
    return found


async def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Send (key, value) pairs in order, acks from all; their (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, value=value, key=key) for key, value in messages]
        metadata = await asyncio.gather(*sent)
        return [(m.partition, m.offset) for m in metadata]
    finally:
        await producer.stop()


def bucket_of(record: RawRecord) -> str | None:
    """The bucket a MinIO event is about (from its Kafka key), None for other messages."""
    if record.key is None or b"/" not in record.key:
        return None
    return record.key.split(b"/", 1)[0].decode(errors="replace")


# --------------------------------------------------------------------------------------
# Poison
# --------------------------------------------------------------------------------------


def poison_messages(
    template: Mapping[str, Any], bucket: str, rng: random.Random, count: int
) -> list[tuple[bytes, bytes]]:
    """``count`` (key, value) messages the indexer must dead-letter: garbage bytes, JSON
    that is not an event, and copies of the real event ``template`` with one field broken.
    Keys name ``bucket`` so they spread over the partitions like real traffic. Pure."""

    def broken(mutate: Callable[[dict[str, Any]], None]) -> bytes:
        document = json.loads(json.dumps(template))
        mutate(document)
        return json.dumps(document).encode()

    def record(document: dict[str, Any]) -> dict[str, Any]:
        return dict(document["Records"][0])

    def set_object(document: dict[str, Any], name: str, value: object) -> None:
        record(document)["s3"]["object"][name] = value

    def drop_s3(document: dict[str, Any]) -> None:
        del document["Records"][0]["s3"]

    def other_key(document: dict[str, Any]) -> None:
        document["Key"] = f"{bucket}/not-the-record's-key"

    def bad_time(document: dict[str, Any]) -> None:
        document["Records"][0]["eventTime"] = "yesterday, around noon"

    def no_records(document: dict[str, Any]) -> None:
        document["Records"] = []

    makers: list[Callable[[int], bytes]] = [
        lambda n: rng.randbytes(rng.randrange(1, 300)) + b"\xff\xfe",  # not UTF-8
        lambda n: f"not json {n} {{".encode(),
        lambda n: json.dumps({"hello": "world", "n": n}).encode(),
        lambda n: json.dumps([n, "a list"]).encode(),
        lambda n: b"",  # empty
        lambda n: b"x" * 70_000,  # over INDEXER_MAX_MESSAGE_BYTES of the suite
        lambda n: broken(lambda d: set_object(d, "size", f"big-{n}")),
        lambda n: broken(lambda d: set_object(d, "sequencer", f"not hex {n}")),
        lambda n: broken(drop_s3),
        lambda n: broken(other_key),
        lambda n: broken(bad_time),
        lambda n: broken(no_records),
    ]
    messages = []
    for n in range(count):
        value = makers[n % len(makers)](n)
        messages.append((f"{bucket}/poison-{n}".encode(), value))
    return messages


def wait_until(condition: Callable[[], bool], message: Callable[[], str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message()
        time.sleep(0.2)
