"""Figures of the benchmarks: per-mode summaries, the run's summary JSON, plain tables.

Each part writes its raw results (every run, every series) as JSON into the results
directory; ``update_summary`` folds the parts of one ``python -m bench`` run into
``summary.json`` (the one results file kept in the repository), and ``tables`` renders
that summary as markdown tables. No conclusions are written here: what the figures mean
is written by hand in docs/benchmarks.md.

The throughput headline is a ratio, not a rate: on a shared 2-core machine absolute
rates move with the neighbours' load, while a ratio between runs made one right after the
other mostly does not. So each round's indexer rate is divided by the same round's drain
rate, and the median of those ratios is reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

GOAL_RATIO: Final = 0.2
GOAL_RATIO_MODES: Final = ("sqlite", "postgres")
GOAL_RSS_MB: Final = 200.0
GOAL_RSS_EVENTS: Final = 1_000_000
# "Flat": the RSS of the last quarter of a run is not above that of its second quarter
# by more than this (the first quarter is warm-up: imports, buffers, caches filling).
FLAT_TOLERANCE_MB: Final = 15.0
GOAL_RATE: Final = 100
GOAL_P99_MS: Final = 200.0

# Raw result file of each part, under the results directory.
RAW: Final = {
    "throughput": "indexer_throughput.json",
    "rss": "rss/indexer_throughput.json",
    "replay": "replay.json",
    "load": "load.json",
    "load-direct": "load-direct.json",
    "processing": "processing.json",
}

Run = Mapping[str, Any]  # one child's JSON line
Doc = dict[str, Any]


# --- the throughput modes ------------------------------------------------------------------


@dataclass(frozen=True)
class ModeSummary:
    mode: str
    rates: list[float]
    median_rate: float
    median_seconds: float
    median_wall_seconds: float
    peak_rss_mb: float
    rss_growth_mb: float  # worst run


def rss_growth_mb(series: Sequence[Sequence[float]]) -> float:
    """Median RSS of the last quarter minus that of the second quarter of a run."""
    if len(series) < 8:
        return 0.0
    values = [rss for _, rss in series]
    quarter = len(values) // 4
    return statistics.median(values[-quarter:]) - statistics.median(values[quarter : 2 * quarter])


def summarise_mode(mode: str, runs: Sequence[Run]) -> ModeSummary:
    mine = [r for r in runs if r["mode"] == mode]
    return ModeSummary(
        mode=mode,
        rates=[r["events_per_s"] for r in mine],
        median_rate=statistics.median(r["events_per_s"] for r in mine),
        median_seconds=statistics.median(r["seconds"] for r in mine),
        median_wall_seconds=statistics.median(r["wall_seconds"] for r in mine),
        peak_rss_mb=max(r["peak_rss_mb"] for r in mine),
        rss_growth_mb=max(rss_growth_mb(r["rss_series"]) for r in mine),
    )


def round_ratios(rounds: Sequence[Mapping[str, Run]], mode: str) -> list[float]:
    """``mode``'s rate over the drain rate of the same round."""
    return [
        r[mode]["events_per_s"] / r["drain"]["events_per_s"]
        for r in rounds
        if mode in r and "drain" in r
    ]


# --- what was measured, on what ----------------------------------------------------------


def machine_facts() -> dict[str, str]:
    ram_kib = int(_proc_field("/proc/meminfo", "MemTotal", "0 kB").split()[0])
    return {
        "CPU": _proc_field("/proc/cpuinfo", "model name", platform.processor() or "unknown"),
        "cores (logical)": str(os.cpu_count()),
        "RAM": f"{ram_kib / 2**20:.1f} GiB",
        "OS": platform.platform(),
    }


def _proc_field(path: str, name: str, default: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def consumer_code(repo: Path) -> str:
    """Which consumer code was measured: git HEAD, plus a hash of ``consumer/`` as it is on
    disk. Each child imports the package afresh, so an edit made during the benchmark
    (someone else working in the same tree) would change the code between runs; comparing
    this before and after shows it."""
    digest = hashlib.sha256()
    for path in sorted((repo / "consumer").rglob("*.py")):
        digest.update(str(path.relative_to(repo)).encode())
        digest.update(path.read_bytes())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "no git"
    return f"HEAD {head}, consumer/ sha256 {digest.hexdigest()[:12]}"


def library_versions() -> dict[str, str]:
    versions = {"Python": platform.python_version()}
    for package in ("aiokafka", "asyncpg", "msgspec", "pydantic", "structlog"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    versions["SQLite library"] = sqlite3.sqlite_version
    return versions


# --- the summary -------------------------------------------------------------------------


def read_json(path: Path) -> Doc | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def update_summary(results: Path, ran: Mapping[str, Doc], run: Doc) -> Doc:
    """Fold the parts that ran (name → {"date", "wall_s", "command"}) into
    ``summary.json``; a part that did not run keeps its earlier section and date."""
    summary: Doc = read_json(results / "summary.json") or {}
    summary["run"] = run
    parts: Doc = summary.setdefault("parts", {})
    for name, when in ran.items():
        raw = read_json(results / RAW[name])
        if raw is None:
            continue
        parts[name] = {**when, **SECTIONS[name](raw)}
    throughput = parts.get("throughput", {})
    summary["machine"] = {**machine_facts(), **throughput.get("versions", {})}
    summary["goals"] = goals(parts)
    (results / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def _number(value: Any) -> int:
    """An event count, also from results written as "100,000"."""
    return int(str(value).replace(",", ""))


def throughput_section(raw: Doc) -> Doc:
    params = raw["params"]
    modes = {}
    for mode, summary in raw["summaries"].items():
        ratios = raw["ratios"].get(mode, [])
        modes[mode] = {
            **{k: v for k, v in summary.items() if k != "mode"},
            "ratio": statistics.median(ratios) if ratios else None,
            "round_ratios": ratios,
        }
    return {
        "events": _number(params["N"]),
        "rounds": params["rounds"],
        "batch": params["batch"],
        "parse_per_s": raw.get("parse_per_s"),
        "mean_message_bytes": raw.get("mean_message_bytes"),
        "event_mix": raw.get("event_mix"),
        "versions": raw.get("versions", {}),
        "modes": modes,
    }


def _load_section(raw: Doc) -> Doc:
    return {
        "params": raw["params"],
        "saturation_rate": raw["saturation_rate"],
        "steps": raw["steps"],
    }


def _as_is(raw: Doc) -> Doc:
    return raw


SECTIONS: Final = {
    "throughput": throughput_section,
    "rss": throughput_section,
    "replay": _as_is,
    "load": _load_section,
    "load-direct": _load_section,
    "processing": _as_is,
}


def goals(parts: Mapping[str, Doc]) -> list[Doc]:
    """Each goal with the figure it is judged on; ``met`` is None when it was not run."""
    rows = []
    for mode in GOAL_RATIO_MODES:
        ratio = parts.get("throughput", {}).get("modes", {}).get(mode, {}).get("ratio")
        rows.append(
            {
                "goal": f"indexer/drain ratio >= {GOAL_RATIO} on {mode} (metrics on)",
                "measured": None if ratio is None else round(ratio, 3),
                "met": None if ratio is None else ratio >= GOAL_RATIO,
            }
        )
    for part in ("load", "load-direct"):
        steps = parts.get(part, {}).get("steps", [])
        step = next((s for s in steps if s["offered_rate"] == GOAL_RATE), None)
        goal = f"p99 PUT → indexed < {GOAL_P99_MS:.0f} ms at {GOAL_RATE} uploads/s ({part})"
        if step is None:
            rows.append({"goal": goal, "measured": None, "met": None})
            continue
        p99 = step["put_to_indexed_ms"]["p99"]
        every_put = step["indexed"] == step["ok"]
        rows.append({"goal": goal, "measured": round(p99), "met": p99 < GOAL_P99_MS and every_put})
    rows.append(_rss_goal(parts.get("rss")))
    return rows


def _rss_goal(rss: Doc | None) -> Doc:
    goal = (
        f"SQLite indexer RSS flat (growth <= {FLAT_TOLERANCE_MB:.0f} MB) and < "
        f"{GOAL_RSS_MB:.0f} MB over {GOAL_RSS_EVENTS:,} events"
    )
    sqlite = (rss or {}).get("modes", {}).get("sqlite")
    if rss is None or sqlite is None or rss["events"] < GOAL_RSS_EVENTS:
        return {"goal": goal, "measured": None, "met": None}
    peak, growth = sqlite["peak_rss_mb"], sqlite["rss_growth_mb"]
    return {
        "goal": goal,
        "measured": {"peak_rss_mb": peak, "rss_growth_mb": round(growth, 1)},
        "met": peak < GOAL_RSS_MB and growth <= FLAT_TOLERANCE_MB,
    }


# --- tables ----------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.0f}"


def _measured(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{name} {number}" for name, number in value.items())
    return "—" if value is None else str(value)


def _yes(value: bool | None) -> str:
    return "not run" if value is None else ("yes" if value else "**no**")


def tables(summary: Doc) -> list[str]:
    """The summary as markdown tables, one section per part."""
    parts, goal_rows = summary.get("parts", {}), summary["goals"]
    lines = [
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *[f"| {g['goal']} | {_measured(g['measured'])} | {_yes(g['met'])} |" for g in goal_rows],
        "",
    ]
    for name, section in parts.items():
        lines += [f"## {name}: `{section.get('command', '')}`, {section.get('date', '')}", ""]
        lines += RENDER[name](section)
        lines.append("")
    return lines


def mode_table(modes: Mapping[str, Doc]) -> list[str]:
    lines = [
        "| mode | median events/s | per round | ratio to drain (median; per round) "
        "| active s | wall s | peak RSS MB | RSS growth MB |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for mode, s in modes.items():
        ratio = "—"
        if s["ratio"] is not None:
            ratio = f"{s['ratio']:.3f}; " + ", ".join(f"{r:.3f}" for r in s["round_ratios"])
        lines.append(
            f"| {mode} | {s['median_rate']:,.0f} | {', '.join(f'{r:,.0f}' for r in s['rates'])} "
            f"| {ratio} | {s['median_seconds']:.1f} | {s['median_wall_seconds']:.1f} "
            f"| {s['peak_rss_mb']:.0f} | {s['rss_growth_mb']:+.1f} |"
        )
    return lines


def _throughput_lines(section: Doc) -> list[str]:
    return [
        f"{section['events']:,} events, {section['rounds']} round(s), batch {section['batch']}; "
        f"`parse_message` alone {section.get('parse_per_s') or 0:,} messages/s; "
        f"mean message {section.get('mean_message_bytes') or 0:,} bytes",
        "",
        *mode_table(section["modes"]),
    ]


def _replay_lines(section: Doc) -> list[str]:
    lines = [
        f"{section['events']:,} events:",
        "",
        "| run | wall s | events/s | journaled | duplicates |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, run in section["runs"].items():
        summary = run["summary"]
        lines.append(
            f"| {name} | {run['wall_s']:.1f} | {run['events_per_s']:,} | "
            f"{summary.get('journaled', 0):,} | {summary.get('duplicates', 0):,} |"
        )
    return lines


def step_table(steps: Sequence[Doc]) -> list[str]:
    lines = [
        "| offered /s | achieved /s | PUTs ok (failed) | PUT p50 / p99 ms | PUT response p99 ms "
        "| PUT → indexed p50 / p95 / p99 ms | event → indexed p99 ms | PUT → Kafka p50 / p99 ms "
        "| Kafka → indexed p50 / p99 ms | lag max (mean) | max backlog | indexer batch ms "
        "| saturated |",
        "|---:|---:|---:|---|---:|---|---:|---|---|---:|---:|---:|---|",
    ]
    for s in steps:
        d, latency = s["put_to_indexed_ms"], s["put_latency_ms"]
        k, i = s.get("put_to_kafka_ms") or {}, s.get("kafka_to_indexed_ms") or {}
        lines.append(
            f"| {s['offered_rate']:,.0f} | {s['achieved_rate']:,.0f} | {s['ok']:,} ({s['failed']}) "
            f"| {_ms(latency['p50'])} / {_ms(latency['p99'])} | {_ms(s['put_response_ms']['p99'])} "
            f"| {_ms(d['p50'])} / {_ms(d['p95'])} / {_ms(d['p99'])} "
            f"| {_ms(s['event_to_indexed_ms']['p99'])} "
            f"| {_ms(k.get('p50'))} / {_ms(k.get('p99'))} "
            f"| {_ms(i.get('p50'))} / {_ms(i.get('p99'))} "
            f"| {s['max_lag_events']} ({s.get('mean_lag_events', 0):.1f}) "
            f"| {s['max_backlog_objects']} | {s['mean_batch_ms']:.1f} "
            f"| {'**yes**' if s['saturated'] else 'no'} |"
        )
    return lines


_CPU_ORDER: Final = (
    "minio",
    "kafka",
    "consumer",
    "uploaders",
    "machine (all cores, %)",
    "iowait (all cores, %)",
)


def cpu_table(steps: Sequence[Doc]) -> list[str]:
    """CPU per process during each step, % of one core."""
    seen = {name for s in steps for name in s["cpu_percent"]}
    names = [n for n in _CPU_ORDER if n in seen] + sorted(seen - set(_CPU_ORDER))
    lines = ["| offered /s | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for s in steps:
        cells = [_ms(s["cpu_percent"].get(n)) for n in names]
        lines.append(f"| {s['offered_rate']:,.0f} | " + " | ".join(cells) + " |")
    return lines


def error_lines(steps: Sequence[Doc]) -> list[str]:
    """The first errors of each step that had any (failed PUTs, lost lag samples)."""
    return [
        f"- errors at {s['offered_rate']:,.0f}/s: " + "; ".join(s["errors"])
        for s in steps
        if s.get("errors")
    ]


def _load_lines(section: Doc) -> list[str]:
    params, steps = section["params"], section["steps"]
    errors = error_lines(steps)
    return [
        f"{params['workers']} uploader processes × {params['threads']} threads, "
        f"{params['body_bytes']:,}-byte objects, {params['step_s']:g} s per step; "
        f"saturated at {section['saturation_rate'] or '—'} offered/s",
        "",
        *step_table(steps),
        "",
        *([*errors, ""] if errors else []),
        "CPU per process (% of one core):",
        "",
        *cpu_table(steps),
    ]


def _processing_lines(section: Doc) -> list[str]:
    big, small = section["big"], section["one_small"]
    return [
        "| probe run (one processor process, timed from its start) | objects/s | s "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|",
        *[
            f"| {section['files']} small files, concurrency {run['concurrency']} "
            f"| {run['objects_per_s']} | {run['seconds']} | {run['peak_rss_mib']} |"
            for run in section["small"]
        ],
        f"| one {big['gib']} GiB WAV | — | {big['seconds']} | {big['peak_rss_mib']} |",
        f"| one 2 s WAV | — | — | {small['peak_rss_mib']} |",
    ]


RENDER: Final = {
    "throughput": _throughput_lines,
    "rss": _throughput_lines,
    "replay": _replay_lines,
    "load": _load_lines,
    "load-direct": _load_lines,
    "processing": _processing_lines,
}
