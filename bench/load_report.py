"""The load test's figures: percentiles, one step's summary, saturation.

Pure functions over the rows the uploaders and the index produced, so the arithmetic can
be read (and checked) apart from the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

# A step is saturated when the achieved PUT rate falls under this share of the offered
# rate, or when PUTs wait longer than SATURATED_P99_S (intended start → response).
ACHIEVED_SHARE: Final = 0.9
SATURATED_P99_S: Final = 1.0


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
