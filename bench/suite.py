"""``python -m bench``: the one driver of the benchmarks (``make bench`` runs it).

    python -m bench [--events 200000] [--rounds 2] [--rss-events 1000000]
                    [--replay-events 1000000] [--step-s 10] [--max-rate 3200]
                    [--files 300] [--big-gb 1.1] [--no-profile] [--parts a,b]
                    [--quick] [--shared-machine] [--results bench/results] [--report-only]

Runs each part in its own process, one after the other, against the running stack:

1. throughput: drain vs the SQLite / PostgreSQL indexers (also traced) vs each index
   alone, over --events events, --rounds rounds; then one more SQLite run under py-spy,
   whose flame graph is written as profile-sqlite.svg (unless --no-profile);
2. rss: drain and the SQLite indexer over --rss-events events, for RSS over time;
3. replay: ``python -m consumer replay --since`` over --replay-events events, twice;
4. load: uploads at rising rates through the stack's MinIO (queue_dir), the indexer in
   its own process, up to MinIO's saturation or --max-rate;
5. load-direct: the same on a private MinIO without queue_dir;
6. processing: the probe over --files small recordings, and one --big-gb WAV.

Each part writes its raw results (JSON) into --results; then the run's figures are
folded into summary.json, the plots are drawn, and the summary's tables are printed and
written to tables.md. Only summary.json and the plots are kept in the repository; what
they mean is written by hand in docs/benchmarks.md. --report-only redoes that last step
from what --results holds. --quick is a small run of every part (a few minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench import plots, report

# Relative, so the commands written into summary.json name no machine's directories.
DEFAULT_RESULTS: Final = Path("bench/results")
PARTS: Final = ("throughput", "rss", "replay", "load", "load-direct", "processing")
THROUGHPUT_MODES: Final = "drain,sqlite,postgres,sqlite-traced,sqlite-alone,postgres-alone"
QUICK: Final = {
    "events": 20_000,
    "rounds": 1,
    "rss_events": 10_000,
    "replay_events": 5_000,
    "step_s": 3.0,
    "max_rate": 400,
    "files": 20,
    "big_gb": 0.05,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--events", type=int, default=200_000, help="throughput events (200000)")
    add("--rounds", type=int, default=2, help="throughput rounds (2)")
    add("--rss-events", type=int, default=1_000_000, help="events of the RSS run (1000000)")
    add("--replay-events", type=int, default=1_000_000, help="replay events (1000000)")
    add("--step-s", type=float, default=10.0, help="load: seconds per rate step (10)")
    add("--max-rate", type=int, default=3200, help="load: highest rate (3200)")
    add("--files", type=int, default=300, help="processing: small files (300)")
    add("--big-gb", type=float, default=1.1, help="processing: size of the big file (1.1)")
    add("--no-profile", action="store_true", help="skip the py-spy run")
    add("--parts", type=_parts, default=list(PARTS), help=f"a subset of {','.join(PARTS)}")
    add("--quick", action="store_true", help="small sizes for every part: " + str(QUICK))
    add("--shared-machine", action="store_true", help="other work shared the machine")
    add("--results", type=Path, default=DEFAULT_RESULTS, help="results directory")
    add("--report-only", action="store_true", help="only the summary, plots and tables")
    args = parser.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for name, value in QUICK.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(args, name, value)
    return args


def _parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"parts are {','.join(PARTS)}; got {text!r}")
    return [p for p in PARTS if p in chosen]


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Part name → its module and arguments (run as ``python -m bench.<module> …``)."""
    out = ["--out", str(args.results)]
    profile = [] if args.no_profile else ["--profile", "sqlite"]
    load = ["load", "--step-s", f"{args.step_s:g}", "--max-rate", str(args.max_rate), *out]
    every = {
        "throughput": [
            *("indexer_throughput", "--events", str(args.events), "--rounds", str(args.rounds)),
            *("--modes", THROUGHPUT_MODES, *out, *profile),
        ],
        "rss": [
            *("indexer_throughput", "--events", str(args.rss_events), "--rounds", "1"),
            *("--modes", "drain,sqlite", "--out", str(args.results / "rss")),
        ],
        "replay": ["replay_time", "--events", str(args.replay_events), *out],
        "load": load,
        "load-direct": [*load, "--delivery", "direct"],
        "processing": [
            *("processing", "--files", str(args.files), "--big-gb", f"{args.big_gb:g}", *out)
        ],
    }
    return {name: every[name] for name in args.parts}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ran: dict[str, report.Doc] = {}
    for name, command in ({} if args.report_only else commands(args)).items():
        print(f"\n=== {name}: python -m bench.{' '.join(command)}", flush=True)
        part_started = time.perf_counter()
        module = [sys.executable, "-m", f"bench.{command[0]}"]
        done = subprocess.run([*module, *command[1:]], check=False)  # noqa: S603 - our modules
        if done.returncode != 0:
            print(f"{name} failed (exit {done.returncode}); stopping", file=sys.stderr)
            return 1
        ran[name] = {
            "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
            "wall_s": round(time.perf_counter() - part_started, 1),
            "command": f"python -m bench.{' '.join(command)}",
        }
    run = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        "wall_s": round(time.perf_counter() - started, 1),
        "parts_run": list(ran),
        "shared_machine": args.shared_machine,
    }
    summary = report.update_summary(args.results, ran, run)
    drawn = plots.draw(args.results, args.parts if args.report_only else ran)
    lines = report.tables(summary)
    (args.results / "tables.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n" + "\n".join(lines))
    written = ", ".join(p.name for p in [args.results / "summary.json", *drawn])
    print(f"\nwrote {written}, tables.md into {args.results} in {run['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
