"""The load test's figures: percentiles, one step's summary, saturation, markdown, plots.

Pure functions over the rows the uploaders and the index produced, so the arithmetic can
be read (and checked) apart from the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# A step is saturated when the achieved PUT rate falls under this share of the offered
# rate, or when PUTs wait longer than SATURATED_P99_S (intended start → response).
ACHIEVED_SHARE: Final = 0.9
SATURATED_P99_S: Final = 1.0
GOAL_RATE: Final = 100
GOAL_P99_MS: Final = 200.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max, in milliseconds, of values in seconds."""
    return {
        "p50": percentile(values, 50) * 1000,
        "p95": percentile(values, 95) * 1000,
        "p99": percentile(values, 99) * 1000,
        "max": (max(values) if values else math.nan) * 1000,
    }


@dataclass
class StepSummary:
    offered_rate: float
    planned: int  # PUTs the step offered
    started: int
    ok: int
    failed: int
    achieved_rate: float  # successful PUTs / (last response - first intended start)
    put_latency_ms: dict[str, float]  # started → response (what one request took)
    put_response_ms: dict[str, float]  # intended start → response (queueing included)
    indexed: int  # successful PUTs found in the index
    put_to_indexed_ms: dict[str, float]  # client's PUT response → indexed_at
    event_to_indexed_ms: dict[str, float]  # MinIO's eventTime → indexed_at
    max_lag_events: int  # Kafka lag of the indexer's group, the most seen during the step
    max_backlog_objects: int  # PUTs answered but not yet in the index, the most seen
    mean_batch_ms: float  # the indexer's mean batch duration during the step (/metrics)
    batches: int
    cpu_percent: dict[str, float] = field(default_factory=dict)  # of one core, per process
    # PUT → indexed split at the Kafka record's timestamp (filled in after the run).
    put_to_kafka_ms: dict[str, float] = field(default_factory=dict)
    kafka_to_indexed_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    mean_lag_events: float = 0.0  # the same lag, mean over the step's samples

    @property
    def saturated(self) -> bool:
        return (
            self.achieved_rate < ACHIEVED_SHARE * self.offered_rate
            or self.put_response_ms["p99"] > SATURATED_P99_S * 1000
        )


def summarise_step(
    offered_rate: float,
    planned: int,
    rows: Sequence[Sequence[Any]],
    indexed: Mapping[str, tuple[float, float]],
) -> dict[str, Any]:
    """The figures of one step from the uploaders' rows (key, intended, started, done, ok)
    and the index's {key: (event_time, indexed_at)} (epoch seconds)."""
    good = [r for r in rows if r[4]]
    first = min((r[1] for r in rows), default=0.0)
    last = max((r[3] for r in good), default=first)
    found = [r for r in good if r[0] in indexed]
    return {
        "offered_rate": offered_rate,
        "planned": planned,
        "started": len(rows),
        "ok": len(good),
        "failed": len(rows) - len(good),
        "achieved_rate": len(good) / (last - first) if last > first else 0.0,
        "put_latency_ms": spread([r[3] - r[2] for r in good]),
        "put_response_ms": spread([r[3] - r[1] for r in good]),
        "indexed": len(found),
        "put_to_indexed_ms": spread([indexed[r[0]][1] - r[3] for r in found]),
        "event_to_indexed_ms": spread([indexed[r[0]][1] - indexed[r[0]][0] for r in found]),
    }


def saturation_rate(steps: Sequence[StepSummary]) -> float | None:
    """The first offered rate at which MinIO stopped keeping up; None if none did."""
    return next((s.offered_rate for s in steps if s.saturated), None)


def goal_step(steps: Sequence[StepSummary]) -> StepSummary | None:
    return next((s for s in steps if s.offered_rate == GOAL_RATE), None)


def goal_line(steps: Sequence[StepSummary]) -> tuple[bool | None, str]:
    """(PASS?, sentence) for "p99 PUT → indexed < 200 ms at 100 uploads/s"."""
    step = goal_step(steps)
    if step is None:
        return None, f"no step at {GOAL_RATE} uploads/s was run"
    p99 = step.put_to_indexed_ms["p99"]
    ok = p99 < GOAL_P99_MS and step.indexed == step.ok
    return ok, (
        f"p99 PUT → indexed at {GOAL_RATE} uploads/s: {p99:.0f} ms "
        f"(goal < {GOAL_P99_MS:.0f} ms; {step.indexed:,} of {step.ok:,} PUTs indexed)"
    )


# --- text --------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def table_lines(steps: Sequence[StepSummary]) -> list[str]:
    lines = [
        "| offered /s | achieved /s | PUTs ok (failed) | PUT p50 / p99 ms | PUT response p99 ms "
        "| PUT → indexed p50 / p95 / p99 ms | event → indexed p99 ms | PUT → Kafka p50 / p99 ms "
        "| Kafka → indexed p50 / p99 ms | lag max (mean) | max backlog | indexer batch ms "
        "| saturated |",
        "|---:|---:|---:|---|---:|---|---:|---|---|---:|---:|---:|---|",
    ]
    for s in steps:
        d = s.put_to_indexed_ms
        k = s.put_to_kafka_ms or {"p50": math.nan, "p99": math.nan}
        i = s.kafka_to_indexed_ms or {"p50": math.nan, "p99": math.nan}
        lines.append(
            f"| {s.offered_rate:,.0f} | {s.achieved_rate:,.0f} | {s.ok:,} ({s.failed}) "
            f"| {_ms(s.put_latency_ms['p50'])} / {_ms(s.put_latency_ms['p99'])} "
            f"| {_ms(s.put_response_ms['p99'])} "
            f"| {_ms(d['p50'])} / {_ms(d['p95'])} / {_ms(d['p99'])} "
            f"| {_ms(s.event_to_indexed_ms['p99'])} "
            f"| {_ms(k['p50'])} / {_ms(k['p99'])} | {_ms(i['p50'])} / {_ms(i['p99'])} "
            f"| {s.max_lag_events} ({s.mean_lag_events:.1f}) "
            f"| {s.max_backlog_objects} | {s.mean_batch_ms:.1f} "
            f"| {'**yes**' if s.saturated else 'no'} |"
        )
    return lines


def error_lines(steps: Sequence[StepSummary]) -> list[str]:
    """The first errors of each step that had any (failed PUTs, lost lag samples)."""
    lines = [
        f"- errors at {s.offered_rate:,.0f}/s: " + "; ".join(s.errors) for s in steps if s.errors
    ]
    return [*lines, ""] if lines else []


_CPU_ORDER: Final = (
    "minio",
    "kafka",
    "consumer",
    "uploaders",
    "machine (all cores, %)",
    "iowait (all cores, %)",
)


def cpu_lines(steps: Sequence[StepSummary]) -> list[str]:
    seen = {name for s in steps for name in s.cpu_percent}
    names = [n for n in _CPU_ORDER if n in seen] + sorted(seen - set(_CPU_ORDER))
    lines = [
        "| offered /s | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for s in steps:
        cells = [f"{s.cpu_percent.get(n, math.nan):.0f}" for n in names]
        lines.append(f"| {s.offered_rate:,.0f} | " + " | ".join(cells) + " |")
    return lines


# --- plots -------------------------------------------------------------------------------


def plot_delay(path: Path, steps: Sequence[StepSummary], delivery: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [s.offered_rate for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        ax.plot(rates, [s.put_to_indexed_ms[name] for s in steps], style, label=name)
    ax.axhline(GOAL_P99_MS, color="red", linestyle="--", linewidth=1, label="p99 goal")
    saturated = saturation_rate(steps)
    if saturated is not None:
        ax.axvline(saturated, color="grey", linestyle=":", label="MinIO saturated")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(rates, [f"{r:g}" for r in rates])
    ax.minorticks_off()
    ax.set_xlabel("offered uploads/s")
    ax.set_ylabel("PUT response → indexed_at (ms, log)")
    ax.set_title(f"Upload-to-index delay per upload rate ({delivery} delivery)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rates(path: Path, steps: Sequence[StepSummary]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [s.offered_rate for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(rates, rates, "--", color="grey", label="offered")
    left.plot(rates, [s.achieved_rate for s in steps], "o-", label="achieved PUTs/s")
    left.set_xscale("log", base=2)
    left.set_yscale("log", base=2)
    left.set_xticks(rates, [f"{r:g}" for r in rates])
    left.set_yticks(rates, [f"{r:g}" for r in rates])
    left.minorticks_off()
    left.set_xlabel("offered uploads/s")
    left.set_ylabel("uploads/s")
    left.set_title("MinIO: achieved vs offered")
    left.legend()
    for name, style in (("p50", "o-"), ("p99", "^-")):
        right.plot(rates, [s.put_latency_ms[name] for s in steps], style, label=f"PUT {name}")
    right.plot(rates, [s.put_response_ms["p99"] for s in steps], "x--", label="response p99")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xticks(rates, [f"{r:g}" for r in rates])
    right.set_xlabel("offered uploads/s")
    right.set_ylabel("ms (log)")
    right.set_title("PUT latency (response: from the intended start)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lag(
    path: Path, series: Sequence[Sequence[float]], marks: Sequence[Any], delivery: str
) -> None:
    """Kafka lag and index backlog over the whole run; ``marks`` = (t, offered rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
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
    ax.set_title(f"Consumer lag during the load steps ({delivery} delivery)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
