"""Load test: uploads at fixed rates through the real MinIO, the indexer in its own process.

    python -m bench.load [--rates 25,50,100,200,400] [--max-rate 3200] [--step-s 10]
                         [--max-per-step 8000] [--workers 2] [--threads 16]
                         [--body-bytes 8192] [--out bench/results]

1. a scratch bucket wired to the Kafka target like the buckets of minio-notify.json;
   a fresh consumer group whose offsets are committed at the end of the events topic, so
   the indexer reads only this test's events;
2. ``python -m consumer run --role indexer`` as a separate process, on a fresh SQLite
   index, with its health server on a free port (for /metrics);
3. for each rate (then doubling past the list until MinIO saturates, up to --max-rate):
   worker processes offer PUTs of small audio-like objects (``x-amz-meta-user-id``) at that
   rate, open loop, for --step-s seconds (at most --max-per-step PUTs); meanwhile the
   indexer group's Kafka lag and the index backlog are sampled; then the index is read
   back for every object's ``indexed_at``;
4. writes every step (and the lag series) to load.json, or load-direct.json, in --out.

The delay reported is **PUT → indexed**: from the moment the uploader got MinIO's answer
to the PUT (wall clock, ``time.time()``) to the object row's ``indexed_at`` (written by the
indexer, same machine, same clock). See bench/README.md for why this definition.
Everything runs on 127.0.0.1; the bucket, the group's index file and the consumer process
are removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Final, NoReturn

from aiokafka import TopicPartition
from minio import Minio
from minio.deleteobjects import DeleteObject

from bench import load_report, report
from bench.clients import topic_partitions
from bench.load_report import StepSummary
from bench.private_minio import PrivateMinio
from bench.stack_env import settings_for, stack_values
from bench.templates import wire_notifications
from bench.uploader import ShareResult, StepShare, WorkerConfig, init_worker, run_share, warm
from consumer.errors import KafkaUnavailable
from consumer.kafka.clients import new_consumer
from consumer.kafka.lag import KafkaProbe
from consumer.minio import minio_client
from consumer.settings import Settings

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUT: Final = REPO_ROOT / "bench" / "results"
DEFAULT_RATES: Final = (25, 50, 100, 200, 400)
SAMPLE_INTERVAL_S: Final = 0.5
CONSUMER_START_TIMEOUT_S: Final = 120.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rates", type=_rates, default=list(DEFAULT_RATES), help="uploads/s")
    parser.add_argument(
        "--max-rate", type=int, default=3200, help="keep doubling past --rates up to this (3200)"
    )
    parser.add_argument("--step-s", type=float, default=10.0, help="seconds per rate step (10)")
    parser.add_argument(
        "--max-per-step", type=int, default=8000, help="at most this many PUTs per step (8000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="uploader processes (2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per uploader (16)")
    parser.add_argument("--body-bytes", type=int, default=8192, help="object size (8192)")
    parser.add_argument(
        "--catch-up-s", type=float, default=120.0, help="wait at most this for the index (120)"
    )
    parser.add_argument(
        "--delivery",
        choices=("queue", "direct"),
        default="queue",
        help="queue: the stack's MinIO (persistent queue_dir, as deployed); direct: a private "
        "MinIO without queue_dir, sending each event before answering (default queue)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    args = parser.parse_args(argv)
    if args.step_s <= 0 or args.workers < 1 or args.threads < 1 or args.max_per_step < 1:
        parser.error("--step-s, --workers, --threads and --max-per-step must be positive")
    return args


def _rates(text: str) -> list[int]:
    try:
        rates = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"rates are integers, e.g. 25,50,100; got {text!r}"
        ) from exc
    if not rates or rates[0] < 1:
        raise argparse.ArgumentTypeError(f"rates must be positive; got {text!r}")
    return rates


def planned_rates(rates: Sequence[int], max_rate: int) -> Iterator[int]:
    """The listed rates, then doubling past the last one up to ``max_rate``."""
    yield from rates
    rate = rates[-1] * 2
    while rate <= max_rate:
        yield rate
        rate *= 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return LoadTest(args).run()


def _exit_on_sigterm(*_: object) -> NoReturn:
    print("\nSIGTERM: cleaning up", file=sys.stderr, flush=True)
    sys.exit(143)


class LoadTest:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.values = stack_values()
        self.settings: Settings = settings_for(self.values, LOG_LEVEL="warning")
        self.run_id = uuid.uuid4().hex[:10]
        self.bucket = f"bench-load-{self.run_id}"
        self.group = f"bench-load-{self.run_id}"
        self.samples: list[tuple[float, int, int]] = []
        self.marks: list[tuple[float, int]] = []
        # PUTs MinIO answered so far, counted by the uploader processes (index backlog).
        self.answered: Any = multiprocessing.get_context("spawn").Value("q", 0)
        self.stem = "load" if args.delivery == "queue" else "load-direct"
        self.minio_pid: int | None = None
        # Per step, what the Kafka decomposition needs once the run is over.
        self.step_data: list[tuple[list[Any], dict[str, tuple[float, float]]]] = []

    def run(self) -> int:
        self.args.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with contextlib.ExitStack() as cleanup:
            if self.args.delivery == "direct":
                self._private_minio(cleanup)
            client = minio_client(self.settings)
            self._make_bucket(client, cleanup)
            starts = commit_group_at_end(self.settings, self.group)
            workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
            consumer = Consumer(self.values, self.group, workdir)
            cleanup.callback(consumer.stop)
            consumer.start()
            pool = self._pool(cleanup)
            steps = self._steps(pool, consumer)
            kafka = asyncio.run(kafka_times(self.settings, starts, self.bucket))
            for step, (rows, indexed) in zip(steps, self.step_data, strict=True):
                add_kafka_figures(step, rows, indexed, kafka)
        self._report(steps, time.perf_counter() - started)
        return 0

    # --- set-up --------------------------------------------------------------------------

    def _private_minio(self, cleanup: contextlib.ExitStack) -> None:
        server = PrivateMinio(self.values, self.settings.kafka_events_topic)
        cleanup.callback(server.stop)
        server.start()
        self.minio_pid = server.pid
        self.values = {**self.values, "MINIO_ENDPOINT": server.endpoint}
        self.settings = settings_for(self.values, LOG_LEVEL="warning")

    def _make_bucket(self, client: Minio, cleanup: contextlib.ExitStack) -> None:
        client.make_bucket(self.bucket)
        cleanup.callback(_remove_bucket, client, self.bucket)
        wire_notifications(client, self.settings, self.bucket)
        print(f"bucket {self.bucket} wired to Kafka; consumer group {self.group}", flush=True)

    def _pool(self, cleanup: contextlib.ExitStack) -> ProcessPoolExecutor:
        config = WorkerConfig(
            endpoint=self.settings.minio_endpoint,
            access_key=self.settings.minio_access_key,
            secret_key=self.settings.minio_secret_key.get_secret_value(),
            secure=self.settings.minio_use_ssl,
            bucket=self.bucket,
            threads=self.args.threads,
            body_bytes=self.args.body_bytes,
        )
        pool = ProcessPoolExecutor(
            max_workers=self.args.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(config, self.answered),
        )
        cleanup.callback(pool.shutdown, cancel_futures=True)
        for future in [pool.submit(warm) for _ in range(self.args.workers * 4)]:
            future.result()  # every worker process started before the first step
        return pool

    # --- steps ---------------------------------------------------------------------------

    def _steps(self, pool: ProcessPoolExecutor, consumer: Consumer) -> list[StepSummary]:
        index = IndexReader(consumer.index_path, self.bucket)
        print("warm-up: 20 uploads at 20/s …", flush=True)
        warmup = self._offer(pool, "warmup/", 20, 20)
        answered = sum(1 for r in warmup.rows if r[4])
        if not answered or not index.wait_for("warmup/", answered, CONSUMER_START_TIMEOUT_S):
            raise RuntimeError(
                f"warm-up: {answered} of 20 PUTs answered, {index.count('warmup/')} indexed "
                f"within {CONSUMER_START_TIMEOUT_S:.0f} s ({warmup.errors or 'no PUT error'}); "
                f"consumer log: {consumer.log_path.read_text(errors='replace')[-1500:]}"
            )
        sampler = LagSampler(self.settings, self.group, index, self.answered)
        steps: list[StepSummary] = []
        with sampler:
            for rate in planned_rates(self.args.rates, self.args.max_rate):
                self.marks.append((sampler.elapsed(), rate))
                step = self._step(pool, consumer, index, sampler, rate)
                steps.append(step)
                _print_step(step)
                if step.saturated:
                    break
        self.samples = sampler.series
        return steps

    def _step(
        self,
        pool: ProcessPoolExecutor,
        consumer: Consumer,
        index: IndexReader,
        sampler: LagSampler,
        rate: int,
    ) -> StepSummary:
        count = min(int(rate * self.args.step_s), self.args.max_per_step)
        prefix = f"load/r{rate:05d}/"
        cpu = CpuMeter({**self._server_pids(), "consumer": consumer.pid})
        metrics_before = consumer.batch_metrics()
        sampler.reset_peaks()
        result = self._offer(pool, prefix, rate, count)
        ok = sum(1 for r in result.rows if r[4])
        index.wait_for(prefix, ok, self.args.catch_up_s)
        cpu_percent = cpu.percent()
        metrics_after = consumer.batch_metrics()
        indexed = index.times(prefix)
        figures = load_report.summarise_step(rate, count, result.rows, indexed)
        self.step_data.append((result.rows, indexed))
        batches = metrics_after[1] - metrics_before[1]
        batch_s = metrics_after[0] - metrics_before[0]
        cpu_percent["uploaders"] = 100 * result.cpu_s / max(cpu.seconds, 1e-9)
        return StepSummary(
            **figures,
            max_lag_events=sampler.peak_lag,
            mean_lag_events=round(sampler.mean_lag, 1),
            max_backlog_objects=sampler.peak_backlog,
            mean_batch_ms=1000 * batch_s / batches if batches else 0.0,
            batches=int(batches),
            cpu_percent=cpu_percent,
            errors=[*result.errors, *sampler.take_errors()],
        )

    def _offer(self, pool: ProcessPoolExecutor, prefix: str, rate: int, count: int) -> ShareResult:
        """``count`` PUTs at ``rate``/s spread over the worker processes; rows of all."""
        workers = self.args.workers
        start_at = time.time() + 0.5
        deadline = start_at + 1.5 * count / rate + 2.0
        shares = [
            StepShare(
                prefix=prefix,
                worker=w,
                rate_per_s=rate / workers,
                count=len(range(w, count, workers)),
                start_at=start_at + w / rate,  # interleaved: together they tick at ``rate``
                deadline=deadline,
            )
            for w in range(workers)
        ]
        results = [f.result() for f in [pool.submit(run_share, s) for s in shares]]
        return ShareResult(
            rows=[row for r in results for row in r.rows],
            errors=[e for r in results for e in r.errors][:5],
            cpu_s=sum(r.cpu_s for r in results),
        )

    def _server_pids(self) -> dict[str, int]:
        if "MINIO_ENDPOINT" in os.environ and not (REPO_ROOT / ".stack").exists():
            return {}
        from infra.stack import Stack

        running = Stack().running_pids()
        pids = {name: pid for name, pid in running.items() if name in ("minio", "kafka")}
        if self.minio_pid is not None:  # --delivery direct: the private server is measured
            pids["minio"] = self.minio_pid
        return pids

    # --- report --------------------------------------------------------------------------

    def _report(self, steps: list[StepSummary], wall_s: float) -> None:
        out = self.args.out
        params = {
            "rates": [s.offered_rate for s in steps],
            "step_s": self.args.step_s,
            "max_per_step": self.args.max_per_step,
            "workers": self.args.workers,
            "threads": self.args.threads,
            "body_bytes": self.args.body_bytes,
            "wall_s": round(wall_s, 1),
            "delivery": self.args.delivery,
            "command": "python -m bench.load " + " ".join(sys.argv[1:]),
        }
        steps_json = [asdict(s) | {"saturated": s.saturated} for s in steps]
        document = {
            "params": params,
            "machine": report.machine_facts(),
            "steps": steps_json,
            "saturation_rate": load_report.saturation_rate(steps),
            "lag_series": self.samples,
            "marks": self.marks,
        }
        path = out / f"{self.stem}.json"
        path.write_text(json.dumps(document, indent=1), encoding="utf-8")
        print("\n".join(report.step_table(steps_json)))
        print(f"\nwrote {path}")


def _print_step(step: StepSummary) -> None:
    d = step.put_to_indexed_ms
    print(
        f"{step.offered_rate:>6,.0f}/s offered: {step.achieved_rate:>7,.1f}/s achieved, "
        f"{step.ok:,} ok, {step.failed} failed; PUT p99 {step.put_latency_ms['p99']:.0f} ms; "
        f"PUT→indexed p50/p95/p99 {d['p50']:.0f}/{d['p95']:.0f}/{d['p99']:.0f} ms; "
        f"max lag {step.max_lag_events}, backlog {step.max_backlog_objects}"
        + ("  ← saturated" if step.saturated else ""),
        flush=True,
    )


# --- the consumer under test -------------------------------------------------------------


class Consumer:
    """``python -m consumer run --role indexer`` in its own process, on a fresh SQLite
    index and a free health port; its stderr goes to a file shown if it dies."""

    def __init__(self, values: dict[str, str], group: str, workdir: Path) -> None:
        from infra.stack import free_port

        self.index_path = workdir / "index.sqlite3"
        self.log_path = workdir / "consumer.log"
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "INDEX_URL"},
            **values,
            "INDEX_URL": f"sqlite:///{self.index_path}",
            "KAFKA_GROUP_ID": group,
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(self.port),
            "LOG_LEVEL": "warning",
        }
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run", "--role", "indexer"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + CONSUMER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            if self.metrics_text():
                print(f"consumer pid {self.pid} up, /metrics on port {self.port}", flush=True)
                return
            time.sleep(0.3)
        raise RuntimeError(f"the consumer did not serve /metrics within {deadline:.0f} s")

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the consumer exited with {self._proc.returncode}:\n{tail}")

    def metrics_text(self) -> str:
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            return ""

    def batch_metrics(self) -> tuple[float, float]:
        """(sum of batch seconds, batches) of index_batch_duration_seconds so far."""
        self._check_alive()
        return prometheus_sum_count(self.metrics_text(), "index_batch_duration_seconds")

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def prometheus_sum_count(text: str, name: str) -> tuple[float, float]:
    """Sum over labels of ``<name>_sum`` and ``<name>_count`` in Prometheus text format."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


# --- measuring -----------------------------------------------------------------------------


class IndexReader:
    """Read-only look at the consumer's SQLite index (WAL: readers never block its writer)."""

    def __init__(self, path: Path, bucket: str) -> None:
        self.path = path
        self.bucket = bucket

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)

    def count(self, prefix: str = "") -> int:
        if not self.path.exists():
            return 0
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT count(*) FROM objects WHERE bucket = ? AND key >= ? AND key < ?",
                (self.bucket, prefix, prefix + "\U0010ffff"),
            ).fetchone()
        return int(row[0])

    def wait_for(self, prefix: str, expected: int, timeout_s: float) -> bool:
        """Wait until ``expected`` objects under ``prefix`` are indexed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.count(prefix) < expected:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def times(self, prefix: str) -> dict[str, tuple[float, float]]:
        """{key: (event time, indexed_at)} in epoch seconds, for the keys under ``prefix``."""
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT key, first_event_time, indexed_at FROM objects "
                "WHERE bucket = ? AND key >= ? AND key < ?",
                (self.bucket, prefix, prefix + "\U0010ffff"),
            ).fetchall()
        return {
            key: (datetime.fromisoformat(event).timestamp(), datetime.fromisoformat(at).timestamp())
            for key, event, at in rows
        }


class LagSampler:
    """Every SAMPLE_INTERVAL_S, from a thread: the indexer group's Kafka lag on the events
    topic (consumer.kafka.lag, committed offsets) and the index backlog (objects in the bucket
    the index does not have yet, counted against the PUTs MinIO answered so far)."""

    def __init__(self, settings: Settings, group: str, index: IndexReader, answered: Any) -> None:
        self._answered = answered
        self._settings = settings
        self._group = group
        self._index = index
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)
        self._started = time.perf_counter()
        self.series: list[tuple[float, int, int]] = []
        self.peak_lag = 0
        self.peak_backlog = 0
        self.lag_sum = self.lag_samples = 0
        self.errors: list[str] = []

    def elapsed(self) -> float:
        return round(time.perf_counter() - self._started, 2)

    def reset_peaks(self) -> None:
        self.peak_lag = self.peak_backlog = 0
        self.lag_sum = self.lag_samples = 0

    def take_errors(self) -> list[str]:
        """The sampling errors since the last call (at most 3, the first ones)."""
        errors, self.errors = self.errors[:3], []
        return errors

    @property
    def mean_lag(self) -> float:
        return self.lag_sum / self.lag_samples if self.lag_samples else 0.0

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except Exception as exc:  # a dead sampler must not pass for "lag 0"
            self.errors.append(f"lag sampler stopped: {exc}")

    async def _loop(self) -> None:
        topic = self._settings.kafka_events_topic
        async with KafkaProbe(self._settings) as probe:
            while not self._stop.is_set():
                try:
                    lag = sum((await probe.lag(self._group, topic)).values())
                    answered = self._answered.value  # read before the index: never negative
                    backlog = max(0, answered - self._index.count())
                except (KafkaUnavailable, sqlite3.Error) as exc:
                    self.errors.append(f"lag sample failed: {exc}")
                    await asyncio.sleep(SAMPLE_INTERVAL_S)
                    continue
                self.peak_lag = max(self.peak_lag, lag)
                self.lag_sum += lag
                self.lag_samples += 1
                self.peak_backlog = max(self.peak_backlog, backlog)
                self.series.append((self.elapsed(), lag, backlog))
                await asyncio.sleep(SAMPLE_INTERVAL_S)


class CpuMeter:
    """CPU time of some processes over a window, as % of one core of that window."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._start = time.perf_counter()
        self._before = {name: self._cpu(pid) for name, pid in pids.items()}
        self._machine_before = _machine_busy()
        self.seconds = 0.0

    def _cpu(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime

    def percent(self) -> dict[str, float]:
        self.seconds = time.perf_counter() - self._start
        result = {
            name: 100 * (self._cpu(pid) - self._before[name]) / self.seconds
            for name, pid in self._pids.items()
        }
        busy, iowait, total = (
            a - b for a, b in zip(_machine_busy(), self._machine_before, strict=True)
        )
        result["machine (all cores, %)"] = 100 * busy / total if total else 0.0
        result["iowait (all cores, %)"] = 100 * iowait / total if total else 0.0
        return result


def _machine_busy() -> tuple[int, int, int]:
    """(busy, iowait, total) jiffies of all CPUs since boot, from /proc/stat. Waiting for
    the disk is not busy, but a high share of it says the disk is the limit."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return sum(fields) - idle - iowait, iowait, sum(fields)


def commit_group_at_end(settings: Settings, group: str) -> dict[int, int]:
    """Commit ``group``'s offsets at the current end of the events topic, so the indexer
    starts with this test's events, not with whatever the topic held before. Returns
    those offsets by partition."""

    async def commit() -> dict[int, int]:
        tps = await topic_partitions(settings, settings.kafka_events_topic)
        consumer = new_consumer(settings, client_id=group, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit(ends)
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(commit())


async def kafka_times(settings: Settings, starts: dict[int, int], bucket: str) -> dict[str, float]:
    """{object key: the Kafka record's timestamp (s)} for the events of ``bucket`` from
    ``starts`` to the end of the events topic. MinIO's Kafka client (sarama) stamps a record
    when it sends it, so this is the moment MinIO handed the event to Kafka."""
    topic = settings.kafka_events_topic
    consumer = new_consumer(settings, client_id="bench-load", enable_auto_commit=False)
    await consumer.start()
    found: dict[str, float] = {}
    try:
        tps = [TopicPartition(topic, p) for p in starts]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp.partition])
        remaining = {tp: end for tp, end in (await consumer.end_offsets(tps)).items()}
        remaining = {tp: end for tp, end in remaining.items() if end > starts[tp.partition]}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    _note_record(found, record.key, record.timestamp, bucket)
                if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
    finally:
        await consumer.stop()
    return found


def _note_record(
    found: dict[str, float], key: bytes | None, timestamp_ms: int, bucket: str
) -> None:
    name = (key or b"").decode(errors="replace")
    if name.startswith(f"{bucket}/") and timestamp_ms > 0:
        found.setdefault(name[len(bucket) + 1 :], timestamp_ms / 1000)


def add_kafka_figures(
    step: StepSummary,
    rows: Sequence[Any],
    indexed: dict[str, tuple[float, float]],
    kafka: dict[str, float],
) -> None:
    """Split PUT → indexed at the Kafka append: MinIO's delivery, then the consumer's part."""
    done = {r[0]: r[3] for r in rows if r[4]}
    keys = [k for k in done if k in kafka and k in indexed]
    step.put_to_kafka_ms = load_report.spread([kafka[k] - done[k] for k in keys])
    step.kafka_to_indexed_ms = load_report.spread([indexed[k][1] - kafka[k] for k in keys])


def _remove_bucket(client: Minio, bucket: str) -> None:
    """Unwire first (the deletions would flood the events topic), then empty and remove."""
    try:
        client.delete_bucket_notification(bucket)
        doomed = (
            DeleteObject(obj.object_name or "")
            for obj in client.list_objects(bucket, recursive=True)
        )
        errors = [str(error) for error in client.remove_objects(bucket, doomed)]
        if not errors:
            client.remove_bucket(bucket)
            print(f"removed bucket {bucket}", flush=True)
            return
        problem = errors[0]
    except Exception as exc:
        problem = str(exc)
    print(f"could not remove bucket {bucket}: {problem}; remove it by hand", file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
