"""The load test's arithmetic (bench/load_report.py, bench/load.py) and its goal in the
summary (bench/report.py): no server needed."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict

import pytest

from bench import report
from bench.load import _rates, add_kafka_figures, planned_rates, prometheus_sum_count
from bench.load_report import StepSummary, percentile, saturation_rate, spread, summarise_step


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_spread_is_in_milliseconds() -> None:
    result = spread([0.010, 0.020, 0.030, 0.040])
    assert result["p50"] == pytest.approx(20.0)
    assert result["p99"] == pytest.approx(40.0)
    assert result["max"] == pytest.approx(40.0)


def _rows() -> list[tuple[str, float, float, float, bool]]:
    # key, intended, started, done, ok — 4 PUTs due 0.1 s apart from t=100, one failed.
    return [
        ("a", 100.0, 100.0, 100.01, True),
        ("b", 100.1, 100.1, 100.12, True),
        ("c", 100.2, 100.25, 100.30, True),
        ("d", 100.3, 100.3, 100.40, False),
    ]


def test_summarise_step_counts_and_delays() -> None:
    indexed = {"a": (100.005, 100.05), "b": (100.11, 100.22)}  # c is not indexed (yet)
    step = summarise_step(10, 4, _rows(), indexed)
    assert (step["planned"], step["started"], step["ok"], step["failed"]) == (4, 4, 3, 1)
    assert step["indexed"] == 2
    # 3 good PUTs between the first due time (100.0) and the last good answer (100.30).
    assert step["achieved_rate"] == pytest.approx(3 / 0.30)
    # PUT answer → indexed_at: a 40 ms, b 100 ms.
    assert step["put_to_indexed_ms"]["p50"] == pytest.approx(40.0)
    assert step["put_to_indexed_ms"]["max"] == pytest.approx(100.0)
    # c waited 50 ms in the client's queue: response (due → answer) 100 ms, latency 50 ms.
    assert step["put_response_ms"]["max"] == pytest.approx(100.0)
    assert step["put_latency_ms"]["max"] == pytest.approx(50.0)


def _summary(rate: float, achieved: float, response_p99_ms: float, p99_ms: float) -> StepSummary:
    ms = {"p50": p99_ms / 2, "p95": p99_ms, "p99": p99_ms, "max": p99_ms}
    return StepSummary(
        offered_rate=rate,
        planned=100,
        started=100,
        ok=100,
        failed=0,
        achieved_rate=achieved,
        put_latency_ms=ms,
        put_response_ms={**ms, "p99": response_p99_ms},
        indexed=100,
        put_to_indexed_ms=ms,
        event_to_indexed_ms=ms,
        max_lag_events=0,
        max_backlog_objects=0,
        mean_batch_ms=1.0,
        batches=1,
    )


def test_saturation_is_the_first_rate_that_falls_behind_or_queues() -> None:
    steps = [
        _summary(100, 100, 50, 30),
        _summary(200, 199, 1500, 30),  # keeps the rate, but PUTs wait 1.5 s: saturated
        _summary(400, 300, 50, 30),
    ]
    assert not steps[0].saturated
    assert saturation_rate(steps) == 200
    assert saturation_rate([_summary(100, 85, 50, 30)]) == 100  # under 90 % of offered
    assert saturation_rate(steps[:1]) is None


def _load_goal(steps: list[StepSummary]) -> dict[str, object]:
    parts = {"load": {"steps": [asdict(s) | {"saturated": s.saturated} for s in steps]}}
    return next(g for g in report.goals(parts) if g["goal"].endswith("(load)"))


def test_delay_goal_judges_p99_at_100_per_second() -> None:
    goal = _load_goal([_summary(50, 50, 10, 500), _summary(100, 100, 10, 150)])
    assert (goal["measured"], goal["met"]) == (150, True)
    assert _load_goal([_summary(100, 100, 10, 250)])["met"] is False
    assert _load_goal([_summary(50, 50, 10, 10)])["met"] is None


def test_kafka_split_of_the_delay() -> None:
    step = _summary(10, 10, 10, 10)
    indexed = {"a": (100.005, 100.05), "b": (100.11, 100.22)}
    kafka = {"a": 100.03, "b": 100.21}
    add_kafka_figures(step, _rows(), indexed, kafka)
    assert step.put_to_kafka_ms["p50"] == pytest.approx(20.0)  # a: 100.01 → 100.03
    assert step.kafka_to_indexed_ms["p50"] == pytest.approx(10.0)  # b: 100.21 → 100.22


def test_planned_rates_double_past_the_list() -> None:
    assert list(planned_rates([25, 50, 100], 500)) == [25, 50, 100, 200, 400]
    assert list(planned_rates([25], 25)) == [25]


def test_rates_argument() -> None:
    assert _rates("100, 25,50") == [25, 50, 100]
    for bad in ("", "a,b", "0,10"):
        with pytest.raises(argparse.ArgumentTypeError):
            _rates(bad)


def test_prometheus_sum_count_adds_label_sets() -> None:
    text = "\n".join(
        [
            "# TYPE index_batch_duration_seconds histogram",
            'index_batch_duration_seconds_bucket{backend="sqlite",le="0.1"} 3',
            'index_batch_duration_seconds_sum{backend="sqlite"} 0.25',
            'index_batch_duration_seconds_count{backend="sqlite"} 3',
            'index_batch_duration_seconds_sum{backend="postgresql"} 0.5',
            'index_batch_duration_seconds_count{backend="postgresql"} 2',
        ]
    )
    assert prometheus_sum_count(text, "index_batch_duration_seconds") == (0.75, 5.0)
    assert prometheus_sum_count("", "index_batch_duration_seconds") == (0.0, 0.0)


def test_error_lines_name_only_steps_with_errors() -> None:
    quiet = asdict(_summary(25, 25, 5, 5))
    noisy = asdict(_summary(50, 50, 5, 5)) | {"errors": ["lag sample failed: timeout"]}
    assert report.error_lines([quiet]) == []
    assert report.error_lines([quiet, noisy]) == ["- errors at 50/s: lag sample failed: timeout"]
