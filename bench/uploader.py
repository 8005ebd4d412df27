"""The load generator's worker processes: PUTs at a fixed rate, open loop.

Each worker process owns one MinIO client (a connection pool as large as its thread pool)
and, for one rate step, schedules its share of the uploads at fixed intended times
``start_at + i / rate``. A thread picks each PUT up; when every thread is busy the PUT
waits in the pool's queue, so an overloaded MinIO shows as a growing gap between the
intended and the actual start (open loop: the offered rate does not slow down because the
server does, which is what hides saturation in closed-loop generators).

Times are wall-clock (``time.time()``): they are compared with the index's ``indexed_at``,
written by another process on the same machine, hence the same clock.
"""

from __future__ import annotations

import io
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from minio import Minio

# One Ogg page header, then noise: an "audio-like" body of a few KB, as the bot stores.
_OGG_MAGIC: Final = b"OggS\x00\x02" + bytes(20)


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process needs; passed in memory (pickled), never on a command line,
    because it holds the secret key."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool
    bucket: str
    threads: int
    body_bytes: int


@dataclass(frozen=True)
class StepShare:
    """One worker's part of a rate step."""

    prefix: str  # key prefix of the step, e.g. "load/r0100/"
    worker: int
    rate_per_s: float  # this worker's share of the offered rate
    count: int
    start_at: float  # wall clock of the first intended PUT
    deadline: float  # no PUT is started after this (the step's bound in time)


# (key, intended, started, done, ok) — tuples, not objects: thousands cross a pipe.
UploadRow = tuple[str, float, float, float, bool]


@dataclass(frozen=True)
class ShareResult:
    rows: list[UploadRow]
    errors: list[str]  # the first few distinct error messages
    cpu_s: float  # this worker process's CPU time (user + system) during the share


_client: Minio | None = None
_config: WorkerConfig | None = None
_body: bytes = b""
_answered: Any = None  # a multiprocessing.Value shared by the workers: PUTs answered ok


def init_worker(config: WorkerConfig, answered: Any) -> None:
    """Process-pool initializer: one client and one body per worker process."""
    global _client, _config, _body, _answered
    _config = config
    _answered = answered
    http = urllib3.PoolManager(
        maxsize=config.threads,
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        retries=urllib3.Retry(total=0),
    )
    _client = Minio(
        config.endpoint,
        access_key=config.access_key,
        secret_key=config.secret_key,
        secure=config.secure,
        http_client=http,
    )
    _body = _OGG_MAGIC + os.urandom(max(0, config.body_bytes - len(_OGG_MAGIC)))


def warm() -> int:
    """A no-op run in every worker so the pool's start-up is not inside a measured step."""
    return os.getpid()


def run_share(share: StepShare) -> ShareResult:
    """Offer ``share.count`` PUTs at ``share.rate_per_s``; the rows of those started."""
    assert _config is not None
    cpu_before = _cpu_s()
    rows: list[UploadRow] = []
    errors: list[str] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=_config.threads) as pool:
        futures: list[Future[None]] = []
        for i in range(share.count):
            intended = share.start_at + i / share.rate_per_s
            delay = intended - time.time()
            if delay > 0:
                time.sleep(delay)
            if time.time() > share.deadline:
                break
            key = f"{share.prefix}w{share.worker}-{i:06d}.ogg"
            futures.append(pool.submit(_put, key, intended, share, rows, errors, lock))
        for future in futures:
            future.result()
    return ShareResult(rows=rows, errors=errors[:5], cpu_s=_cpu_s() - cpu_before)


def _put(
    key: str,
    intended: float,
    share: StepShare,
    rows: list[UploadRow],
    errors: list[str],
    lock: threading.Lock,
) -> None:
    assert _client is not None
    assert _config is not None
    started = time.time()
    if started > share.deadline:  # queued past the step's bound: not offered after all
        return
    ok = True
    try:
        _client.put_object(
            _config.bucket,
            key,
            io.BytesIO(_body),
            len(_body),
            content_type="audio/ogg",
            metadata={"x-amz-meta-user-id": str(share.worker + 1)},
        )
    except Exception as exc:  # a failed PUT is a result to count, not a crash
        ok = False
        with lock:
            if len(errors) < 5 and str(exc) not in errors:
                errors.append(str(exc))
    done = time.time()
    if ok:
        with _answered.get_lock():
            _answered.value += 1
    with lock:
        rows.append((key, intended, started, done, ok))


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system
