"""The front benchmark report, docs/benchmarks.md, from the results of one `make bench`.

    python -m bench.docs_report [--results bench/results] [--out docs/benchmarks.md]

Reads what the parts wrote under the results directory — indexer_throughput.json (and
``rss-*/indexer_throughput.json`` of the long RSS run), load.json and load-direct.json,
profile-sqlite.txt, suite.json (the command and the wall time of each part), and
bench/baseline.json (the indexer before issue 17) — and writes the markdown with the goals'
PASS/FAIL, linking the plots where the benchmarks wrote them. Where a
goal is missed, the report names the bottleneck with the figures that show it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench import load_report, replay_time, report
from bench.profile import analyse, read_collapsed

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS: Final = REPO_ROOT / "bench" / "results"
DEFAULT_OUT: Final = REPO_ROOT / "docs" / "benchmarks.md"

Doc = dict[str, Any]


def _load(path: Path) -> Doc | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def mark(ok: bool | None) -> str:
    return "not run" if ok is None else ("**PASS**" if ok else "**FAIL**")


def _ms(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.0f}"


# --- sections ------------------------------------------------------------------------------


def header_lines(suite: Doc) -> list[str]:
    parts = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in suite["parts"].items())
    return [
        "# Benchmarks",
        "",
        f"Written by `{suite['command']}` on {suite['date']} — "
        f"**{suite['wall_s'] / 60:.1f} min** wall time ({parts}). "
        f"{suite['machine_note']}",
        "",
        *(
            [
                "Not run this time (their sections show an earlier run's results): "
                + ", ".join(suite["not_run"])
                + ".",
                "",
            ]
            if suite.get("not_run")
            else []
        ),
        "Everything runs on this one machine on 127.0.0.1: MinIO, Kafka and PostgreSQL of "
        "`infra/stack`, the consumer, and the load generators. How each part works: "
        "[bench/README.md](../bench/README.md); the raw results (JSON, per-part markdown, "
        "profiles) are in [bench/results/](../bench/results/).",
        "",
    ]


def machine_lines(throughput: Doc | None) -> list[str]:
    versions: dict[str, str] = dict(throughput["versions"]) if throughput else {}
    if not versions:
        versions = report.library_versions()
    return ["## Machine and versions", "", *report.machine_lines(versions), ""]


def goals_lines(
    throughput: Doc | None, rss: Doc | None, queue: Doc | None, direct: Doc | None
) -> list[str]:
    lines = ["## Goals", "", "| goal | measured | result |", "|---|---|---|"]
    for mode, name in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        ratio = _ratio(throughput, mode)
        lines.append(
            f"| indexer/drain ratio ≥ {report.GOAL_RATIO} on {name} (metrics on) | "
            + (f"{ratio:.3f}" if ratio is not None else "—")
            + f" | {mark(None if ratio is None else ratio >= report.GOAL_RATIO)} |"
        )
    for name, doc in (("as deployed (queue_dir)", queue), ("direct delivery", direct)):
        ok, sentence = _delay_goal(doc)
        lines.append(
            f"| p99 PUT → indexed < 200 ms at 100 uploads/s, {name} | {sentence} | {mark(ok)} |"
        )
    ok, sentence = _rss_goal(rss or throughput)
    lines.append(f"| RSS flat over 1M events (SQLite indexer) | {sentence} | {mark(ok)} |")
    return [*lines, ""]


def _ratio(doc: Doc | None, mode: str) -> float | None:
    ratios = (doc or {}).get("ratios", {}).get(mode)
    return statistics.median(ratios) if ratios else None


def _steps(doc: Doc | None) -> list[load_report.StepSummary]:
    if not doc:
        return []
    fields = load_report.StepSummary.__dataclass_fields__
    return [
        load_report.StepSummary(**{k: v for k, v in s.items() if k in fields}) for s in doc["steps"]
    ]


def _delay_goal(doc: Doc | None) -> tuple[bool | None, str]:
    if doc is None:
        return None, "not run"
    return load_report.goal_line(_steps(doc))


def _rss_goal(doc: Doc | None) -> tuple[bool | None, str]:
    summary = (doc or {}).get("summaries", {}).get("sqlite")
    if not summary:
        return None, "not run"
    events = int(str(doc["params"]["N"]).replace(",", "")) if doc else 0
    flat = summary["rss_growth_mb"] <= report.FLAT_TOLERANCE_MB
    ok = flat and summary["peak_rss_mb"] < report.GOAL_RSS_MB and events >= 1_000_000
    sentence = (
        f"over {events:,} events: peak {summary['peak_rss_mb']:.0f} MB, growth "
        f"{summary['rss_growth_mb']:+.1f} MB (flat: ≤ {report.FLAT_TOLERANCE_MB:.0f} MB)"
    )
    if events < 1_000_000:
        sentence += (
            "; fewer than 1M events were run — `make bench` (its default "
            "`--rss-events 1000000`) runs the 1M check"
        )
        return (None if flat else False), sentence
    return ok, sentence


def before_after_lines(doc: Doc | None, baseline: Doc | None) -> list[str]:
    """The indexer before issue 17 (bench/baseline.json) next to this run: rates and the
    ratio to the drain measured with it."""
    if doc is None or baseline is None:
        return []
    lines = [
        "## Before and after (issue 17)",
        "",
        baseline["note"],
        "",
        "| run | drain events/s | SQLite events/s (ratio) | PostgreSQL events/s (ratio) |",
        "|---|---:|---:|---:|",
    ]

    def cell(rate: float, drain: float) -> str:
        return f"{rate:,.0f} ({rate / drain:.3f})" if drain else f"{rate:,.0f}"

    for run in baseline["runs"]:
        lines.append(
            f"| before: {run['label']} (`{run['code']}`) | {run['drain']:,.0f} | "
            f"{cell(run['sqlite'], run['drain'])} | {cell(run['postgres'], run['drain'])} |"
        )
    summaries = doc["summaries"]
    drain = summaries["drain"]["median_rate"]
    after = {m: summaries[m]["median_rate"] for m in ("sqlite", "postgres") if m in summaries}
    ratios = {m: _ratio(doc, m) for m in after}
    lines.append(
        f"| after: this run (`{doc['versions'].get('consumer code', '?')}`), metrics on, "
        f"median of {doc['params']['rounds']} round(s) | {drain:,.0f} | "
        + " | ".join(
            f"{after[m]:,.0f} ({ratios[m]:.3f})" if m in after and ratios[m] is not None else "—"
            for m in ("sqlite", "postgres")
        )
        + " |"
    )
    return [*lines, "", *([baseline["analysis"], ""] if baseline.get("analysis") else [])]


def throughput_lines(doc: Doc | None, rss: Doc | None, figures: Path) -> list[str]:
    if doc is None:
        return ["## Indexer throughput", "", "Not run.", ""]
    summaries = {m: report.ModeSummary(**s) for m, s in doc["summaries"].items()}
    lines = [
        "## Indexer throughput vs. a bare aiokafka drain of the same topic",
        "",
        f"N = {doc['params']['N']} MinIO-format events (cloned from events MinIO really "
        f"published) in a fresh 4-partition topic, {doc['params']['rounds']} round(s); in each "
        "round the drain, the SQLite indexer and the PostgreSQL indexer read the same topic "
        "one after the other, each in its own process; the ratio is the indexer's rate over "
        "the drain's of the same round (median over rounds). Every indexer run is checked "
        "against the generator's tally (journal rows, live objects, tombstones).",
        "",
        *report.table_lines(summaries, doc["ratios"]),
        "",
        f"- `parse_message` alone (the msgspec fast path, pydantic for what it refuses; one "
        f"core, no Kafka, no index): **{doc.get('parse_per_s', 0):,} messages/s**; mean message "
        f"{doc.get('mean_message_bytes', 0):,} bytes",
        "",
        f"![throughput]({figures.as_posix()}/indexer_throughput.png)",
        "",
    ]
    if rss is not None:
        lines += _rss_run_lines(rss)
    return lines


def _rss_run_lines(rss: Doc) -> list[str]:
    summaries = {m: report.ModeSummary(**s) for m, s in rss["summaries"].items()}
    return [
        f"Long run for memory: {rss['params']['N']} events, drain and SQLite, one round:",
        "",
        *report.table_lines(summaries, rss["ratios"]),
        "",
    ]


def rss_lines(figures: Path, long_run: Path | None) -> list[str]:
    what = "the long run" if long_run else "every run of the throughput benchmark"
    if long_run is not None:
        figures = figures / long_run.name
    return [
        "## RSS over time",
        "",
        f"VmRSS of the indexer process every 0.5 s during {what}; peak is VmHWM.",
        "",
        f"![RSS over time]({figures.as_posix()}/indexer_rss.png)",
        "",
    ]


def replay_lines(replay: Doc | None) -> list[str]:
    if replay is None:
        return []
    return [
        "## `replay --since` over a backlog",
        "",
        *replay_time.markdown_lines(replay),
        "",
        "A catch-up after an outage, a reconcile and a replay all run at the indexer's pace; "
        "the second run is a replay over a window that is indexed already (every event a "
        "duplicate, skipped by its journal identity). How it runs: "
        "[bench/replay_time.py](../bench/replay_time.py).",
        "",
    ]


def load_lines(queue: Doc | None, direct: Doc | None, figures: Path) -> list[str]:
    lines = [
        "## Upload rate → index delay (load test)",
        "",
        "Worker processes PUT small audio-like objects (`x-amz-meta-user-id` metadata) at "
        "fixed rates, open loop, into a bucket wired to Kafka like the buckets of "
        "minio-notify.json; `python -m consumer run --role indexer` runs as a separate "
        "process on a fresh SQLite index. **Delay = PUT → indexed**: from the moment the "
        "uploader got MinIO's answer to its PUT to the object row's `indexed_at` (same "
        "machine, same wall clock). `indexed_at` is taken when the indexer's write "
        "transaction starts; the row is visible at its commit, one *indexer batch ms* later "
        "(column below). *PUT → Kafka* and *Kafka → indexed* split that delay at the Kafka "
        "record's timestamp (set by MinIO's Kafka client when it sends): the first part is "
        "MinIO's delivery, the second the consumer's own.",
        "",
    ]
    for title, doc in (
        ("As deployed: the stack's MinIO with its persistent event queue (`queue_dir`)", queue),
        (
            "Direct delivery: a private MinIO without `queue_dir` (event sent before the PUT "
            "is answered)",
            direct,
        ),
    ):
        lines += [f"### {title}", ""]
        if doc is None:
            lines += ["Not run.", ""]
            continue
        steps = _steps(doc)
        saturated = load_report.saturation_rate(steps)
        at = next((s for s in steps if s.saturated), None)
        params = doc["params"]
        lines += [
            f"`{params['command']}` — {params['workers']} uploader processes × "
            f"{params['threads']} threads, {params['body_bytes']:,}-byte objects, "
            f"{params['step_s']:g} s per step.",
            "",
            *load_report.table_lines(steps),
            "",
            "MinIO saturated at: "
            + (
                f"**{saturated:,.0f} offered uploads/s** (achieved < 90 % of offered, or PUT "
                "response p99 > 1 s); the most it achieved in any step is "
                f"**{max(s.achieved_rate for s in steps):,.0f} uploads/s**. "
                + _saturation_sentence(steps, at)
                if saturated and at
                else f"no rate up to {steps[-1].offered_rate:,.0f}/s (raise `--max-rate`)"
            ),
            "",
            _lag_sentence(steps),
            "",
            *load_report.error_lines(steps),
            "CPU per process during each step (% of one core):",
            "",
            *load_report.cpu_lines(steps),
            "",
        ]
    lines += [
        f"![delay per rate]({figures.as_posix()}/delay_per_rate.png)",
        "",
        f"![achieved rate and PUT latency, queue_dir]({figures.as_posix()}/load_rates.png)",
        "",
        f"![lag over time, queue_dir]({figures.as_posix()}/load_lag.png)",
        "",
        f"![achieved rate and PUT latency, direct]({figures.as_posix()}/load-direct_rates.png)",
        "",
        f"![lag over time, direct]({figures.as_posix()}/load-direct_lag.png)",
        "",
    ]
    return lines


def _lag_sentence(steps: Sequence[load_report.StepSummary]) -> str:
    """How far behind the consumer was in the steps MinIO kept up with."""
    below = [s for s in steps if not s.saturated]
    if not below:
        return "Every step saturated MinIO: no consumer lag below saturation to show."
    worst = max(below, key=lambda s: s.max_lag_events)
    return (
        f"Consumer lag below saturation ({below[0].offered_rate:,.0f}–"
        f"{below[-1].offered_rate:,.0f} uploads/s): the indexer group's Kafka lag, sampled "
        f"every 0.5 s, averaged at most {max(s.mean_lag_events for s in below):.1f} events in "
        f"a step and peaked at {worst.max_lag_events} (at {worst.offered_rate:,.0f}/s); "
        "every answered PUT was "
        f"in the index after each step ({sum(s.indexed for s in below):,} of "
        f"{sum(s.ok for s in below):,}). The *max backlog* column counts PUTs answered but "
        "not yet indexed wherever they wait — with `queue_dir` that is mostly MinIO's queue."
    )


def _saturation_sentence(
    steps: Sequence[load_report.StepSummary], at: load_report.StepSummary
) -> str:
    """The evidence of saturation: the achieved rate stops growing while the server-side
    PUT latency grows; and who used the CPU then (is it the CPU at all?)."""
    before = steps[steps.index(at) - 1] if steps.index(at) > 0 else at
    cpu = at.cpu_percent
    parts = [f"{n} {cpu[n]:.0f} %" for n in ("minio", "uploaders", "kafka", "consumer") if n in cpu]
    machine = cpu.get("machine (all cores, %)", math.nan)
    iowait = "iowait (all cores, %)" in cpu
    return (
        f"From {before.offered_rate:,.0f} to {at.offered_rate:,.0f} offered/s the achieved "
        f"rate went from {before.achieved_rate:,.0f} to {at.achieved_rate:,.0f}/s while "
        f"MinIO's PUT latency (request sent → answered) went from p50 "
        f"{_ms(before.put_latency_ms['p50'])} / p99 {_ms(before.put_latency_ms['p99'])} ms to "
        f"p50 {_ms(at.put_latency_ms['p50'])} / p99 {_ms(at.put_latency_ms['p99'])} ms, and "
        f"PUTs queued in the client up to {_ms(at.put_response_ms['p99'])} ms (p99): the "
        "achieved rate no longer follows the offered one. CPU in that step (% of one core): "
        f"{', '.join(parts)}; all cores {machine:.0f} % busy"
        + (f", {cpu['iowait (all cores, %)']:.0f} % waiting for the disk" if iowait else "")
        + (
            " — the two cores are nearly used up, so on this machine MinIO's limit is the CPU "
            "it gets next to Kafka, the consumer and the uploaders."
            if machine >= 80
            else "."
        )
    )


def bottleneck_lines(
    throughput: Doc | None,
    rss: Doc | None,
    queue: Doc | None,
    direct: Doc | None,
    profile: Path,
) -> list[str]:
    lines = ["## Where the goals are missed, and why", ""]
    missed = {
        mode: ratio
        for mode in report.GOAL_MODES
        if (ratio := _ratio(throughput, mode)) is not None and ratio < report.GOAL_RATIO
    }
    if throughput and missed:
        lines += _ratio_bottleneck(throughput, missed, profile)
    ok, _ = _delay_goal(queue)
    if ok is False and queue is not None:
        lines += _queue_bottleneck(queue, direct)
    ok, sentence = _rss_goal(rss or throughput)
    if ok is False:
        lines += [
            f"**RSS ({sentence}).** See the RSS plot below: a line that keeps rising through "
            "the run is memory held per event (an unbounded cache or queue); a step at the "
            "start is only warm-up.",
            "",
        ]
    if len(lines) == 2:
        lines.append("Every goal that was run is met.")
    return [*lines, ""]


def _ratio_bottleneck(doc: Doc, missed: dict[str, float], profile: Path) -> list[str]:
    drain = doc["summaries"]["drain"]["median_rate"]
    parse = doc.get("parse_per_s", 0)
    below = ", ".join(f"{ratio:.3f} on {mode}" for mode, ratio in missed.items())
    lines = [
        f"**Indexer/drain ratio ({below}).** The bare drain only moves bytes "
        f"({drain:,.0f} records/s); the indexer decodes every message (`parse_message` "
        f"alone: {parse:,} messages/s on one core, {parse / drain if drain else 0:.2f} of "
        "the drain), plans the batch and writes it.",
        "",
    ]
    lines += _ceiling_lines(doc)
    lines += ["Where the indexer's time goes:", ""]
    if profile.exists():
        lines += _profile_lines(profile)
    return lines


def _ceiling_lines(doc: Doc) -> list[str]:
    """What the index alone reached (the "-alone" modes), when they ran."""
    parts = []
    for mode, name in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        alone, whole = _ratio(doc, f"{mode}-alone"), _ratio(doc, mode)
        if alone is None:
            continue
        part = f"{name} {alone:.3f}"
        if whole is not None:
            part += f" (the indexer reached {whole / alone:.0%} of it)"
        parts.append(part)
    if not parts:
        return []
    return [
        "The index alone, every event read and decoded ahead and only `apply_batch` timed "
        f"(the `-alone` modes): ratio {', '.join(parts)}. That is the database's own pace "
        "with this schema and durability, and so the ceiling of any indexer on it, however "
        f"well it overlaps reading, decoding and writing: where it is below {report.GOAL_RATIO}, "
        "the goal needs less work per event in the database, not a faster indexer.",
        "",
    ]


def _profile_lines(profile: Path) -> list[str]:
    result = analyse(read_collapsed(profile))
    rows = []
    for thread in result.threads.values():
        if not thread.samples or thread.samples == thread.waiting:
            continue
        busy = 1 - thread.waiting / thread.samples
        if busy < 0.01:  # the RSS sampler, the executor's idle threads
            continue
        rows.append(f"{thread.name} busy {busy:.0%}")
    shares = []
    for needle in (
        "Indexer.prepare",
        "run_batch",
        "getmany",
        "DeferredRecords._run",
        "_event_spans",
    ):
        # Each step counted in the thread that runs it (SQLite's run_batch runs in its
        # connection's thread, PostgreSQL's on the event loop's).
        counted = [
            (sum(n for frame, n in t.inclusive.items() if _is_function(frame, needle)), t)
            for t in result.threads.values()
            if t.samples
        ]
        if not counted:
            continue
        count, thread = max(counted, key=lambda pair: pair[0])
        where = "event loop" if thread.name == "MainThread" else thread.name
        shares.append(f"`{needle}` {count / thread.samples:.0%} of {where}")
    return [
        "py-spy profile of a SQLite run ([profile-sqlite.md](../bench/results/profile-sqlite.md),"
        " flame graph [profile-sqlite.svg](../bench/results/profile-sqlite.svg)): "
        + "; ".join(rows)
        + ". Samples per step, in the thread that runs it: "
        + ", ".join(shares)
        + " (decoding the next batch; planning, building rows and running this batch's "
        "statements; fetching; the per-event metrics; the per-event spans). Decoding runs "
        "while the previous batch is written, so a thread that is busy all the time is the "
        "limit; where neither is, the batch's steps still wait on each other (the commit's "
        "fsync, the hops between the threads).",
        "",
    ]


def _delivery_sentence(steps: Sequence[load_report.StepSummary]) -> str:
    """Where MinIO's queue-to-Kafka delivery fell behind (PUT → Kafka p50 more than twice
    that of the slowest rate), with the consumer's own part next to it."""
    timed = [s for s in steps if s.put_to_kafka_ms]
    if not timed:
        return ""
    base = timed[0].put_to_kafka_ms["p50"]
    behind = next((s for s in timed if s.put_to_kafka_ms["p50"] > 2 * base), None)
    if behind is None:
        return "It kept up at every rate tried."
    return (
        f"It fell behind at {behind.offered_rate:,.0f} uploads/s: PUT → Kafka p50 "
        f"{_ms(behind.put_to_kafka_ms['p50'])} ms (against {_ms(base)} ms at "
        f"{timed[0].offered_rate:,.0f}/s) while MinIO still answered "
        f"{behind.achieved_rate:,.0f} PUTs/s and the consumer's part, Kafka → indexed, stayed "
        f"at p99 {_ms(behind.kafka_to_indexed_ms['p99'])} ms: MinIO's event delivery "
        "saturates before its PUTs do."
    )


def _is_function(frame: str, name: str) -> bool:
    """``frame`` ("Class.method (path)") is the function ``name`` (method or plain)."""
    function = frame.split(" (", 1)[0]
    return function == name or function.endswith(f".{name}")


def _queue_bottleneck(queue: Doc, direct: Doc | None) -> list[str]:
    step = load_report.goal_step(_steps(queue))
    assert step is not None
    kafka = step.put_to_kafka_ms or {}
    consumer = step.kafka_to_indexed_ms or {}
    lines = [
        f"**p99 PUT → indexed at 100 uploads/s, as deployed ("
        f"{_ms(step.put_to_indexed_ms['p99'])} ms).** The wait is in MinIO, before Kafka: "
        f"PUT → Kafka p50 {_ms(kafka.get('p50', math.nan))} ms, p99 "
        f"{_ms(kafka.get('p99', math.nan))} ms, while Kafka → indexed (the consumer) is p99 "
        f"{_ms(consumer.get('p99', math.nan))} ms and the indexer group's Kafka lag peaked at "
        f"{step.max_lag_events} events. With `queue_dir` MinIO writes each event to "
        "its on-disk queue before answering the PUT, and a background loop lists that queue "
        "and sends it to Kafka every 3 s (`retryInterval = 3 * time.Second` in MinIO's "
        "internal/store/store.go, `replayItems`): delays spread evenly over 0–3 s, p50 ≈ "
        "1.5 s, p99 ≈ 3 s, as long as the loop keeps up. It sends the queued events one at a "
        "time, each a synchronous Kafka produce (`SendFromStore`, internal/event/target/"
        "kafka.go). " + _delivery_sentence(_steps(queue)),
        "",
    ]
    ok, sentence = _delay_goal(direct)
    if ok is not None:
        lines += [
            f"Without `queue_dir` (direct delivery, same consumer): {sentence} → {mark(ok)}. "
            "That is the consumer's own delay; the stack keeps `queue_dir` because it is what "
            "makes events survive a Kafka outage (docs/getting-started/local-stack.md): durability "
            "is traded for up to 3 s of delay, a choice of MinIO's, not of the consumer.",
            "",
        ]
    return lines


# --- plots and files -------------------------------------------------------------------------


def plot_delay_both(path: Path, queue: Doc | None, direct: Doc | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for doc, label, color in ((queue, "queue_dir", "#c52"), (direct, "direct", "#27a")):
        steps = _steps(doc)
        if not steps:
            continue
        rates = [s.offered_rate for s in steps]
        for name, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            ax.plot(
                rates,
                [max(s.put_to_indexed_ms[name], 1.0) for s in steps],
                style,
                color=color,
                label=f"{label} {name}",
            )
    ax.axhline(load_report.GOAL_P99_MS, color="red", linewidth=1, label="p99 goal (200 ms)")
    ax.axvline(load_report.GOAL_RATE, color="grey", linewidth=0.5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    rates = sorted({s.offered_rate for doc in (queue, direct) for s in _steps(doc)})
    ax.set_xticks(rates, [f"{r:g}" for r in rates])
    ax.minorticks_off()
    ax.set_xlabel("offered uploads/s")
    ax.set_ylabel("PUT response → indexed_at (ms, log; ≤ 1 ms drawn at 1)")
    ax.set_title("Upload-to-index delay per rate: as deployed (queue_dir) vs direct delivery")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: Path, out: Path) -> Path:
    suite = _load(results / "suite.json") or _default_suite()
    throughput = _load(results / "indexer_throughput.json")
    rss_dirs = sorted(results.glob("rss-*/indexer_throughput.json"))
    rss = _load(rss_dirs[-1]) if rss_dirs else None
    queue = _load(results / "load.json")
    direct = _load(results / "load-direct.json")
    # The plots stay where the benchmarks wrote them (one copy in the repository); the
    # report links them there.
    plot_delay_both(results / "delay_per_rate.png", queue, direct)
    figures = Path(os.path.relpath(results, out.parent))
    lines = [
        *header_lines(suite),
        *machine_lines(throughput),
        *goals_lines(throughput, rss, queue, direct),
        *bottleneck_lines(throughput, rss, queue, direct, results / "profile-sqlite.txt"),
        *before_after_lines(throughput, _load(REPO_ROOT / "bench" / "baseline.json")),
        *throughput_lines(throughput, rss, figures),
        *rss_lines(figures, rss_dirs[-1].parent if rss_dirs else None),
        *replay_lines(_load(results / "replay.json")),
        *load_lines(queue, direct, figures),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def _default_suite() -> Doc:
    return {
        "command": "python -m bench.docs_report",
        "date": "unknown",
        "wall_s": 0.0,
        "parts": {},
        "machine_note": "",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.docs_report", description=__doc__)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    print(f"wrote {write(args.results, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
