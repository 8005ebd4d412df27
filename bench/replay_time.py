"""How long ``replay --since`` takes over a backlog of N events.

    python -m bench.replay_time [--events 1000000] [--out bench/results]

A fresh topic is filled with N generated MinIO events (the throughput benchmark's
generator), then ``python -m consumer replay --since 1h --json`` runs twice with
KAFKA_EVENTS_TOPIC pointing at it: into a fresh SQLite index, and into that same index
again, where every event is a duplicate (a replay over a window already indexed). Each
time is the command's whole wall time, process start included, as an operator sees it.
Both runs must account for every event (journaled, then all duplicates), or the benchmark
fails. Writes replay.json into --out; the topic and the index are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.generate import EventFactory
from bench.prefill import create_topic, delete_topic, new_topic_name, produce
from bench.stack_env import settings_for, stack_values
from bench.templates import capture_templates

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUT: Final = REPO_ROOT / "bench" / "results"
# A bound on one replay, so a hung run cannot hold the shared machine forever.
REPLAY_TIMEOUT_S: Final = 3600
# Into a fresh SQLite index, then the same window again (every event a duplicate).
RUNS: Final = ("fresh", "again")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_time", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events (1000000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    values = stack_values()
    settings = settings_for(values, LOG_LEVEL="warning")
    topic = new_topic_name()
    asyncio.run(create_topic(settings, topic))
    directory = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        factory = EventFactory(capture_templates(settings), bucket=settings.minio_audio_bucket_name)
        print(f"filling topic {topic} with {args.events:,} events …", flush=True)
        asyncio.run(produce(settings, topic, factory.messages(args.events), args.events))
        env = {
            **os.environ,
            **values,
            "KAFKA_EVENTS_TOPIC": topic,
            "INDEX_URL": f"sqlite:///{directory / 'index.sqlite3'}",
            "LOG_LEVEL": "warning",
        }
        runs = {name: _replay(env, args.events, name) for name in RUNS}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(Exception):
            asyncio.run(delete_topic(settings, topic))
    doc = {"events": args.events, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return 0


def _replay(env: dict[str, str], events: int, name: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "consumer", "replay", "--since", "1h", "--json"]
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        command,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT_S,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"replay ({name}) exited {done.returncode}: {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {"journaled": events, "duplicates": 0} if name == "fresh" else {"duplicates": events}
    wrong = {k: summary.get(k) for k, v in expected.items() if summary.get(k) != v}
    if wrong or summary.get("events_read") != events:
        raise AssertionError(f"replay ({name}) did not account for {events} events: {summary}")
    print(f"  {name}: {wall:.1f} s ({events / wall:,.0f} events/s)", flush=True)
    return {"wall_s": round(wall, 1), "events_per_s": round(events / wall), "summary": summary}


if __name__ == "__main__":
    sys.exit(main())
