"""Summaries, the markdown report and the plots of one benchmark run.

The headline figure is a ratio, not a rate: on a shared 2-core machine absolute rates move
with the neighbours' load, while a ratio between runs made one right after the other
mostly does not. So each round's indexer rate is divided by the same round's drain rate,
and the median of those ratios is reported.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

MODE_COLORS: Final = {
    "drain": "#888",
    "sqlite": "#2a7",
    "postgres": "#37c",
    "sqlite-traced": "#a72",
    "sqlite-alone": "#7c7",
    "postgres-alone": "#8ad",
}
GOAL_RATIO: Final = 0.2
# The ratio goal holds for each backend (issue 17); the traced mode is reported beside.
GOAL_MODES: Final = ("sqlite", "postgres")
GOAL_RSS_MB: Final = 200.0
# "Flat": the RSS of the last quarter of a run is not above that of its second quarter
# by more than this (the first quarter is warm-up: imports, buffers, caches filling).
FLAT_TOLERANCE_MB: Final = 15.0

Run = Mapping[str, Any]  # one child's JSON line


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


@dataclass(frozen=True)
class Verdict:
    ratio_ok: bool  # every backend measured (GOAL_MODES) reaches GOAL_RATIO
    rss_ok: dict[str, bool]  # per indexer mode: flat and under the limit
    ratio_ok_by_mode: dict[str, bool] = field(default_factory=dict)


def verdict(summaries: Mapping[str, ModeSummary], ratios: Mapping[str, list[float]]) -> Verdict:
    by_mode = {
        mode: statistics.median(ratios[mode]) >= GOAL_RATIO
        for mode in GOAL_MODES
        if ratios.get(mode)
    }
    return Verdict(
        ratio_ok=bool(by_mode) and all(by_mode.values()),
        ratio_ok_by_mode=by_mode,
        rss_ok={
            mode: s.peak_rss_mb < GOAL_RSS_MB and s.rss_growth_mb <= FLAT_TOLERANCE_MB
            for mode, s in summaries.items()
            # "-alone" holds every decoded event in memory by design: not the indexer's RSS.
            if mode != "drain" and not mode.endswith("-alone")
        },
    )


# --- text ----------------------------------------------------------------------------------


def table_lines(
    summaries: Mapping[str, ModeSummary], ratios: Mapping[str, list[float]]
) -> list[str]:
    lines = [
        "| mode | median events/s | per round | ratio to drain (median; per round) "
        "| active s | wall s | peak RSS MB | RSS growth MB |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for mode, s in summaries.items():
        ratio = "—"
        if ratios.get(mode):
            per_round = ", ".join(f"{r:.3f}" for r in ratios[mode])
            ratio = f"**{statistics.median(ratios[mode]):.3f}**; {per_round}"
        lines.append(
            f"| {mode} | {s.median_rate:,.0f} | {', '.join(f'{r:,.0f}' for r in s.rates)} "
            f"| {ratio} | {s.median_seconds:.1f} | {s.median_wall_seconds:.1f} "
            f"| {s.peak_rss_mb:.0f} | {s.rss_growth_mb:+.1f} |"
        )
    return lines


def goal_lines(
    result: Verdict, summaries: Mapping[str, ModeSummary], ratios: Mapping[str, list[float]]
) -> list[str]:
    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = [
        f"Goal: indexer/drain ratio >= {GOAL_RATIO} on SQLite and on PostgreSQL (metrics on), "
        f"RSS flat (growth <= {FLAT_TOLERANCE_MB:.0f} MB, last quarter vs second quarter of "
        f"a run) and < {GOAL_RSS_MB:.0f} MB.",
        "",
    ]
    for mode, ok in result.ratio_ok_by_mode.items():
        ratio = statistics.median(ratios[mode])
        lines.append(f"- ratio on {mode}: {ratio:.3f} → **{mark(ok)}**")
    if ratios.get("sqlite-traced"):
        traced = statistics.median(ratios["sqlite-traced"])
        lines.append(f"- ratio on sqlite with tracing on (no goal): {traced:.3f}")
    for mode in ("sqlite-alone", "postgres-alone"):
        if ratios.get(mode):
            ceiling = statistics.median(ratios[mode])
            lines.append(
                f"- ratio of {mode.removesuffix('-alone')}'s apply_batch alone, events decoded "
                f"ahead (the ceiling of any indexer on it; no goal): {ceiling:.3f}"
            )
    for mode, ok in result.rss_ok.items():
        s = summaries[mode]
        lines.append(
            f"- RSS, {mode}: peak {s.peak_rss_mb:.0f} MB, growth {s.rss_growth_mb:+.1f} MB "
            f"→ **{mark(ok)}**"
        )
    return lines


def machine_lines(versions: Mapping[str, str]) -> list[str]:
    return [f"- {name}: {value}" for name, value in {**machine_facts(), **versions}.items()]


def machine_facts() -> dict[str, str]:
    return {
        "CPU": _cpu_model(),
        "cores (logical)": str(os.cpu_count()),
        "RAM": f"{_mem_total_gib():.1f} GiB",
        "OS": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


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
    for package in ("aiokafka", "aiosqlite", "asyncpg", "msgspec", "pydantic", "structlog"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    versions["SQLite library"] = sqlite3.sqlite_version
    return versions


def write_markdown(
    path: Path,
    *,
    params: Mapping[str, object],
    versions: Mapping[str, str],
    summaries: Mapping[str, ModeSummary],
    ratios: Mapping[str, list[float]],
    notes: Sequence[str],
) -> None:
    result = verdict(summaries, ratios)
    lines = [
        "# Indexer throughput",
        "",
        "Generated by `python -m bench.indexer_throughput` — see bench/README.md for what "
        "each mode measures. Rates are over the active window (first batch to last batch); "
        "ratios are per round (runs one after the other), then the median.",
        "",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; "
        + "; ".join(f"{k} {v}" for k, v in params.items()),
        "",
        "## Machine and versions",
        "",
        *machine_lines(versions),
        "",
        "## Results",
        "",
        *table_lines(summaries, ratios),
        "",
        *goal_lines(result, summaries, ratios),
        "",
        "![events/s per mode](indexer_throughput.png)",
        "",
        "![RSS over time](indexer_rss.png)",
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path.write_text("\n".join(lines), encoding="utf-8")


# --- plots -----------------------------------------------------------------------------------


def plot_throughput(
    path: Path, summaries: Mapping[str, ModeSummary], ratios: Mapping[str, list[float]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summaries)
    fig, ax = plt.subplots(figsize=(2 + 1.3 * len(modes), 4.5))
    colors = [MODE_COLORS.get(m, "#888") for m in modes]
    bars = ax.bar(modes, [summaries[m].median_rate for m in modes], color=colors)
    for i, mode in enumerate(modes):
        ax.scatter(
            [i] * len(summaries[mode].rates), summaries[mode].rates, color="black", s=12, zorder=3
        )
    for bar, mode in zip(bars, modes, strict=True):
        label = f"{summaries[mode].median_rate:,.0f}/s"
        if ratios.get(mode):
            label += f"\n× {statistics.median(ratios[mode]):.2f} of drain"
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_yscale("log")
    ax.set_ylabel("events/s (median; dots: rounds; log scale)")
    ax.set_title("Indexer throughput vs. bare Kafka drain")
    ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rss(path: Path, runs: Sequence[Run]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = MODE_COLORS
    fig, ax = plt.subplots(figsize=(8, 4.5))
    seen: set[str] = set()
    for run in runs:
        times = [t for t, _ in run["rss_series"]]
        values = [v for _, v in run["rss_series"]]
        label = run["mode"] if run["mode"] not in seen else None
        seen.add(run["mode"])
        ax.plot(times, values, color=colors.get(run["mode"], "black"), alpha=0.8, label=label)
    ax.axhline(
        GOAL_RSS_MB, color="red", linestyle="--", linewidth=1, label=f"{GOAL_RSS_MB:.0f} MB goal"
    )
    ax.set_xlabel("seconds since the child started")
    ax.set_ylabel("RSS (MB, VmRSS every 0.5 s)")
    ax.set_title("Memory of each run (one line per round)")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
