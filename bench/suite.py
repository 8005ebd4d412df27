"""`make bench`: every benchmark in one go, then docs/benchmarks.md.

    python -m bench.suite [--events 200000] [--rounds 2] [--rss-events 1000000]
                          [--replay-events 1000000] [--step-s 10] [--max-rate 3200]
                          [--quick] [--no-profile] [--shared-machine]

1. ``bench.indexer_throughput`` — drain vs SQLite vs PostgreSQL over --events, --rounds
   rounds, plus a py-spy profile of one SQLite run;
2. unless --rss-events 0: one more drain + SQLite round over M (1,000,000) events, for
   RSS over time (results in bench/results/rss-M/);
3. unless --replay-events 0: ``bench.replay_time``, ``replay --since`` over that many
   events (1,000,000), into a fresh SQLite index and then again;
4. ``bench.load`` on the stack's MinIO (as deployed, queue_dir): 25, 50, 100, 200, 400
   uploads/s, then doubling until MinIO saturates;
5. ``bench.load --delivery direct``: the same rates on a private MinIO without queue_dir;
6. ``bench.docs_report`` → docs/benchmarks.md (linking the plots in bench/results/).

Each part runs as its own process; the wall time of each is in the report. --quick is a
small but complete run (about 2 minutes; 7 with --rss-events 1000000; no replay timing
unless --replay-events is given) for development;
the full run takes about 17 minutes on the 2-core project machine (its parts as last
measured: throughput 4.9, rss 4.5, replay 4.1, load 1.7, load-direct 1.5).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench import docs_report

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = REPO_ROOT / "bench" / "results"
PARTS: Final = ("throughput", "rss", "replay", "load", "load-direct")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="throughput events (200000)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (2)")
    parser.add_argument(
        "--rss-events",
        type=int,
        default=1_000_000,
        help="events of the long RSS run (1000000; 0: none)",
    )
    parser.add_argument(
        "--replay-events",
        type=int,
        default=1_000_000,
        help="events of the `replay --since` timing (1000000; 0: none)",
    )
    parser.add_argument("--step-s", type=float, default=10.0, help="load step seconds (10)")
    parser.add_argument("--max-rate", type=int, default=3200, help="load: highest rate (3200)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    parser.add_argument(
        "--parts",
        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
        default=None,
        help="run only these parts (throughput,rss,replay,load,load-direct); the others keep "
        "their earlier results, and the report says so",
    )
    parser.add_argument(
        "--shared-machine",
        action="store_true",
        help="say in the report that other work shared the machine during the run",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20000 events, 1 round, 3 s steps, no long RSS run unless --rss-events is given",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts or ()) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)} (known: {', '.join(PARTS)})")
    if args.quick:
        args.events, args.rounds, args.step_s = 20_000, 1, 3.0
        given = argv if argv is not None else sys.argv
        if "--rss-events" not in given:
            args.rss_events = 0
        if "--replay-events" not in given:
            args.replay_events = 0
    return args


def parts(args: argparse.Namespace) -> dict[str, list[str]]:
    """Name → command line of each part (our own modules, run with this interpreter)."""
    module = [sys.executable, "-m"]
    throughput = [
        *module,
        "bench.indexer_throughput",
        "--events",
        str(args.events),
        "--rounds",
        str(args.rounds),
        "--modes",
        "drain,sqlite,postgres,sqlite-traced,sqlite-alone,postgres-alone",
    ]
    if not args.no_profile:
        throughput += ["--profile", "sqlite"]
    load = [*module, "bench.load", "--step-s", f"{args.step_s:g}"]
    commands = {"throughput": throughput}
    if args.rss_events > 0:
        commands["rss"] = [
            *module,
            "bench.indexer_throughput",
            "--events",
            str(args.rss_events),
            "--rounds",
            "1",
            "--modes",
            "drain,sqlite",
            "--out",
            str(RESULTS / f"rss-{args.rss_events}"),
        ]
    if args.replay_events > 0:
        commands["replay"] = [*module, "bench.replay_time", "--events", str(args.replay_events)]
    commands["load"] = [*load, "--max-rate", str(args.max_rate)]
    commands["load-direct"] = [*load, "--delivery", "direct", "--max-rate", str(args.max_rate)]
    if args.parts is not None:
        commands = {name: command for name, command in commands.items() if name in args.parts}
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.parts is None or "rss" in args.parts:
        for stale in RESULTS.glob("rss-*"):  # a long run of an earlier suite is not this run's
            shutil.rmtree(stale, ignore_errors=True)
    walls: dict[str, float] = {}
    for name, command in parts(args).items():
        print(f"\n=== {name}: {' '.join(command[2:])}", flush=True)
        part_started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO_ROOT, check=False)  # noqa: S603 - our modules
        walls[name] = round(time.perf_counter() - part_started, 1)
        if done.returncode != 0:
            print(f"{name} failed (exit {done.returncode}); stopping", file=sys.stderr)
            return 1
    note = (
        "**Other work shared this 2-core machine during the run**: absolute rates and "
        "delays are noisy; the ratios (runs one right after the other) much less."
        if args.shared_machine
        else "The machine ran nothing else of note during the run (the stack and the "
        "benchmark share its cores)."
    )
    suite = {
        "command": "python -m bench.suite " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        "wall_s": round(time.perf_counter() - started, 1),
        "parts": walls,
        "machine_note": note,
        "not_run": [] if args.parts is None else [name for name in PARTS if name not in args.parts],
    }
    (RESULTS / "suite.json").write_text(json.dumps(suite, indent=1), encoding="utf-8")
    out = docs_report.write(RESULTS, docs_report.DEFAULT_OUT)
    print(f"\nwrote {out} in {suite['wall_s'] / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
