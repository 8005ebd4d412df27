"""The benchmarks' summary (bench/report.py): folding a run into summary.json, the goals,
the tables. No server needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import report


def _mode(mode: str, rates: list[float]) -> dict[str, Any]:
    return {
        "mode": mode,
        "rates": rates,
        "median_rate": sorted(rates)[len(rates) // 2],
        "median_seconds": 1.0,
        "median_wall_seconds": 1.5,
        "peak_rss_mb": 120.0,
        "rss_growth_mb": 0.5,
    }


def _throughput(events: int, sqlite_ratios: list[float]) -> dict[str, Any]:
    return {
        "params": {"N": events, "rounds": len(sqlite_ratios), "batch": 2000},
        "parse_per_s": 100_000,
        "mean_message_bytes": 1_263,
        "versions": {"aiokafka": "0.14.0"},
        "rounds": [],
        "summaries": {
            "drain": _mode("drain", [200_000.0] * len(sqlite_ratios)),
            "sqlite": _mode("sqlite", [200_000.0 * r for r in sqlite_ratios]),
        },
        "ratios": {"sqlite": sqlite_ratios},
    }


def test_a_run_replaces_its_parts_and_keeps_the_others(tmp_path: Path) -> None:
    earlier = {"parts": {"replay": {"date": "earlier", "events": 5, "runs": {}}}}
    (tmp_path / "summary.json").write_text(json.dumps(earlier), encoding="utf-8")
    (tmp_path / "indexer_throughput.json").write_text(
        json.dumps(_throughput(1000, [0.1, 0.3, 0.25])), encoding="utf-8"
    )
    ran = {"throughput": {"date": "now", "wall_s": 1.0, "command": "python -m bench.x"}}
    summary = report.update_summary(tmp_path, ran, {"command": "python -m bench"})

    assert summary == json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["parts"]["replay"]["date"] == "earlier"
    throughput = summary["parts"]["throughput"]
    assert (throughput["date"], throughput["events"]) == ("now", 1000)
    assert throughput["modes"]["sqlite"]["ratio"] == 0.25  # the median of the rounds
    assert throughput["modes"]["drain"]["ratio"] is None
    assert summary["machine"]["aiokafka"] == "0.14.0"
    goals = {g["goal"].split(" (")[0]: g for g in summary["goals"]}
    assert goals["indexer/drain ratio >= 0.2 on sqlite"]["met"] is True
    assert goals["indexer/drain ratio >= 0.2 on postgres"]["met"] is None


def test_the_rss_goal_needs_a_million_events() -> None:
    short = report.throughput_section(_throughput(10_000, [0.1]))
    assert report.goals({"rss": short})[-1]["met"] is None
    long = report.throughput_section(_throughput(1_000_000, [0.1]))
    assert report.goals({"rss": long})[-1] == {
        "goal": report.goals({})[-1]["goal"],
        "measured": {"peak_rss_mb": 120.0, "rss_growth_mb": 0.5},
        "met": True,
    }


def test_tables_show_each_goal_and_mode() -> None:
    section = report.throughput_section(_throughput(1000, [0.1, 0.2]))
    parts = {"throughput": {"date": "now", "command": "python -m bench.x", **section}}
    lines = report.tables({"parts": parts, "goals": report.goals(parts)})
    assert "| indexer/drain ratio >= 0.2 on sqlite (metrics on) | 0.15 | **no** |" in lines
    assert "| drain | 200,000 | 200,000, 200,000 | — | 1.0 | 1.5 | 120 | +0.5 |" in lines
    assert any(line.startswith("| sqlite | 40,000 | 20,000, 40,000 | 0.150; ") for line in lines)
