"""The plots of a benchmark run, drawn from the parts' raw results.

``draw(results, ran)`` draws those of the parts that ran, into the results directory;
the ones docs/benchmarks.md shows are kept in the repository. Figures are made without
pyplot (no display, no global state): ``Figure.savefig`` renders with Agg.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.report import GOAL_P99_MS, GOAL_RATE, GOAL_RSS_MB, RAW, Doc, read_json

MODE_COLORS: Final = {
    "drain": "#888",
    "sqlite": "#2a7",
    "postgres": "#37c",
    "sqlite-traced": "#a72",
    "sqlite-alone": "#7c7",
    "postgres-alone": "#8ad",
}
DELIVERY_COLORS: Final = {"load": "#c52", "load-direct": "#27a"}


def draw(results: Path, ran: Collection[str]) -> list[Path]:
    """Every plot of the parts in ``ran`` whose raw results exist; the files written."""
    raw = {name: read_json(results / RAW[name]) for name in RAW}
    figures: dict[str, Figure] = {}
    if "throughput" in ran and (doc := raw["throughput"]) is not None:
        figures["indexer_throughput.png"] = throughput(doc["summaries"], doc["ratios"])
    if "rss" in ran and (doc := raw["rss"]) is not None:
        runs = [run for one_round in doc["rounds"] for run in one_round.values()]
        figures["rss_over_time.png"] = rss_over_time(runs)
    for name in ("load", "load-direct"):
        if name in ran and (doc := raw[name]) is not None:
            figures[f"{name}_rates.png"] = rates(doc["steps"])
            figures[f"{name}_lag.png"] = lag(doc["lag_series"], doc["marks"], name)
    loads = {name: doc["steps"] for name in ("load", "load-direct") if (doc := raw[name])}
    if loads and {"load", "load-direct"} & set(ran):
        figures["delay_per_rate.png"] = delay_per_rate(loads)
    for file_name, figure in figures.items():
        figure.tight_layout()
        figure.savefig(results / file_name, dpi=120)
    return [results / file_name for file_name in figures]


def throughput(summaries: Mapping[str, Doc], ratios: Mapping[str, list[float]]) -> Figure:
    modes = list(summaries)
    figure = Figure(figsize=(2 + 1.3 * len(modes), 4.5))
    ax = figure.subplots()
    medians = [summaries[m]["median_rate"] for m in modes]
    bars = ax.bar(modes, medians, color=[MODE_COLORS.get(m, "#888") for m in modes])
    for i, mode in enumerate(modes):
        rates_ = summaries[mode]["rates"]
        ax.scatter([i] * len(rates_), rates_, color="black", s=12, zorder=3)
    for bar, mode in zip(bars, modes, strict=True):
        label = f"{summaries[mode]['median_rate']:,.0f}/s"
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
    return figure


def rss_over_time(runs: Sequence[Doc]) -> Figure:
    figure = Figure(figsize=(8, 4.5))
    ax = figure.subplots()
    seen: set[str] = set()
    for run in runs:
        mode = run["mode"]
        times = [t for t, _ in run["rss_series"]]
        values = [v for _, v in run["rss_series"]]
        label = mode if mode not in seen else None
        seen.add(mode)
        ax.plot(times, values, color=MODE_COLORS.get(mode, "black"), alpha=0.8, label=label)
    ax.axhline(GOAL_RSS_MB, color="red", linestyle="--", linewidth=1, label="RSS goal")
    ax.set_xlabel("seconds since the child started")
    ax.set_ylabel("RSS (MB, VmRSS every 0.5 s)")
    ax.set_title("Memory of each run (one line per round)")
    ax.set_ylim(bottom=0)
    ax.legend()
    return figure


def _log2_rates(ax: Axes, rates_: Sequence[float]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates_, [f"{r:g}" for r in rates_])
    ax.minorticks_off()
    ax.set_xlabel("offered uploads/s")


def delay_per_rate(loads: Mapping[str, Sequence[Doc]]) -> Figure:
    """PUT → indexed percentiles per offered rate, one colour per delivery."""
    figure = Figure(figsize=(9, 5))
    ax = figure.subplots()
    for name, steps in loads.items():
        offered = [s["offered_rate"] for s in steps]
        for percentile, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            delays = [max(s["put_to_indexed_ms"][percentile], 1.0) for s in steps]
            ax.plot(
                offered, delays, style, color=DELIVERY_COLORS[name], label=f"{name} {percentile}"
            )
    ax.axhline(GOAL_P99_MS, color="red", linewidth=1, label="p99 goal")
    ax.axvline(GOAL_RATE, color="grey", linewidth=0.5)
    ax.set_yscale("log")
    _log2_rates(ax, sorted({s["offered_rate"] for steps in loads.values() for s in steps}))
    ax.set_ylabel("PUT response → indexed_at (ms, log; ≤ 1 ms drawn at 1)")
    ax.set_title("Upload-to-index delay per rate: queue_dir (load) vs direct delivery")
    ax.legend(fontsize=8, ncol=2)
    return figure


def rates(steps: Sequence[Doc]) -> Figure:
    """Achieved vs offered PUTs/s, and the PUT latency, per step."""
    offered = [s["offered_rate"] for s in steps]
    figure = Figure(figsize=(11, 4.5))
    left, right = figure.subplots(1, 2)
    left.plot(offered, offered, "--", color="grey", label="offered")
    left.plot(offered, [s["achieved_rate"] for s in steps], "o-", label="achieved PUTs/s")
    _log2_rates(left, offered)
    left.set_yscale("log", base=2)
    left.set_yticks(offered, [f"{r:g}" for r in offered])
    left.set_ylabel("uploads/s")
    left.set_title("MinIO: achieved vs offered")
    left.legend()
    for name, style in (("p50", "o-"), ("p99", "^-")):
        latency = [s["put_latency_ms"][name] for s in steps]
        right.plot(offered, latency, style, label=f"PUT {name}")
    response = [s["put_response_ms"]["p99"] for s in steps]
    right.plot(offered, response, "x--", label="response p99")
    _log2_rates(right, offered)
    right.set_yscale("log")
    right.set_ylabel("ms (log)")
    right.set_title("PUT latency (response: from the intended start)")
    right.legend()
    return figure


def lag(series: Sequence[Sequence[float]], marks: Sequence[Sequence[Any]], name: str) -> Figure:
    """Kafka lag and index backlog over the whole run; ``marks`` = (t, offered rate)."""
    figure = Figure(figsize=(10, 4))
    ax = figure.subplots()
    times = [p[0] for p in series]
    ax.plot(times, [p[1] for p in series], label="Kafka lag of the indexer group (events)")
    ax.plot(
        times,
        [p[2] for p in series],
        label="index backlog (PUTs answered, not indexed yet: in MinIO, Kafka or the indexer)",
    )
    for t, rate in marks:
        ax.axvline(t, color="grey", linewidth=0.5)
        ax.annotate(f"{rate:g}/s", (t, 0), xytext=(2, 2), textcoords="offset points", fontsize=8)
    ax.set_xlabel("seconds since the first step")
    ax.set_ylabel("events / objects")
    ax.set_yscale("symlog")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Consumer lag during the load steps ({name})")
    ax.legend()
    return figure
