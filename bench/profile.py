"""Where the time goes: run one mode's child under py-spy, summarise the samples.

py-spy writes collapsed stacks (``--format raw``: one ``frame;frame;… count`` line per
distinct stack, the input of flamegraph.pl, inferno and speedscope.app). From them this
module writes a flame graph SVG (so nothing else needs installing) and, per thread, how
much of the time it was busy or waiting and which lines and functions the busy time went
to. ``--threads`` keeps the event loop and aiosqlite's worker thread apart; ``--idle``
keeps the waiting samples, classified here (see ``is_waiting``).
"""

from __future__ import annotations

import functools
import html
import linecache
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

_FRAME: Final = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD: Final = re.compile(r"^thread \(")
# Frames on every stack of a thread (interpreter start-up, the event loop's own loop, the
# benchmark's entry points): 100 % inclusive, so they would crowd out the informative rows.
_PLUMBING: Final = re.compile(
    r"\((<frozen runpy>|threading\.py|asyncio/(runners|base_events|events)\.py"
    r"|bench/indexer_throughput\.py)\)$|^run_child \(bench/child\.py\)$"
)
Stacks = dict[tuple[str, ...], int]


def py_spy_prefix(py_spy: str, output: Path) -> list[str]:
    """``py-spy record … --`` to put before a command; non-blocking, so the measured
    process is not paused at each sample (a profiled run is still not used in the table)."""
    return [
        py_spy,
        "record",
        "--format",
        "raw",
        "--output",
        str(output),
        "--rate",
        "100",
        "--threads",
        "--idle",
        "--",
    ]


def read_collapsed(path: Path) -> Stacks:
    """Parse ``frame;frame;… count`` lines."""
    stacks: Stacks = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            frames = tuple(head.split(";"))
            stacks[frames] = stacks.get(frames, 0) + int(count)
    return stacks


def function_name(frame: str) -> str:
    """``func (file:line)`` without the line, so a function's lines add up."""
    match = _FRAME.match(frame)
    return f"{match['func']} ({match['file']})" if match else frame


def is_waiting(frame: str) -> bool:
    """Whether a stack whose top is ``frame`` is a thread blocked, not computing.

    py-spy is run with ``--idle`` because its own idle detection misses blocking calls made
    from C (the event loop's epoll, aiosqlite's ``queue.get()``), and a thread shown busy
    while it waits would hide where the time really goes. So a sample counts as waiting
    when its top Python line is a blocking call.
    """
    match = _FRAME.match(frame)
    if not match or not match["line"]:
        return False
    source = linecache.getline(_source_path(match["file"]), int(match["line"]))
    return _BLOCKING_CALL.search(source) is not None


_BLOCKING_CALL: Final = re.compile(r"\.(get|wait|poll|select|acquire|join)\(|\bsleep\(")


@functools.cache
def _source_path(short: str) -> str:
    """py-spy shortens paths to the part under sys.path; find the file again."""
    for base in (*sys.path, os.getcwd()):
        candidate = Path(base or ".") / short
        if candidate.is_file():
            return str(candidate)
    return short


@dataclass
class ThreadProfile:
    name: str
    samples: int = 0
    waiting: int = 0
    self_frames: Counter[str] = field(default_factory=Counter)  # busy samples only
    inclusive: Counter[str] = field(default_factory=Counter)  # busy samples only

    @property
    def busy(self) -> int:
        return self.samples - self.waiting


@dataclass
class Profile:
    total: int = 0
    threads: dict[str, ThreadProfile] = field(default_factory=dict)

    def by_size(self) -> list[ThreadProfile]:
        return sorted(self.threads.values(), key=lambda t: t.samples, reverse=True)


def analyse(stacks: Mapping[tuple[str, ...], int]) -> Profile:
    """Per thread: samples, waiting samples, and the busy samples by frame/function."""
    profile = Profile()
    for frames, count in stacks.items():
        profile.total += count
        thread = _thread_of(profile, frames[0] if frames else "")
        thread.samples += count
        code = [f for f in frames if not _THREAD.match(f)]
        if not code or is_waiting(code[-1]):
            thread.waiting += count
            continue
        thread.self_frames[code[-1]] += count
        for name in {function_name(f) for f in code}:
            if not _PLUMBING.search(name):
                thread.inclusive[name] += count
    return profile


def _thread_of(profile: Profile, root: str) -> ThreadProfile:
    match = _THREAD_ROOT.match(root)
    tid, name = (match["tid"], match["name"] or "") if match else ("?", "")
    thread = profile.threads.setdefault(tid, ThreadProfile(name or f"thread {tid}"))
    if name and thread.name.startswith("thread "):
        thread.name = name
    return thread


_THREAD_ROOT: Final = re.compile(r"^thread \((?P<tid>[^)]*)\)(?::\s*(?P<name>.*))?$")


def top(counter: Counter[str], of: int, limit: int) -> list[tuple[str, int, float]]:
    """(name, samples, % of ``of``), most first."""
    return [(name, n, 100 * n / (of or 1)) for name, n in counter.most_common(limit)]


def markdown(profile: Profile, mode: str, seconds: float | None) -> str:
    duration = f" over a {seconds:.1f} s run" if seconds else ""
    lines = [
        f"# py-spy profile of the `{mode}` mode",
        "",
        f"{profile.total:,} samples at 100 Hz{duration}, waiting included (`--idle`). "
        "A sample is *waiting* when the thread's top line is a blocking call (epoll, "
        "queue get, lock); the tables below count only *busy* samples, as % of the "
        "thread's samples (≈ % of its wall time).",
        "",
        "| thread | samples | busy | waiting |",
        "|---|---:|---:|---:|",
    ]
    for t in profile.by_size():
        lines.append(
            f"| {t.name} | {t.samples:,} | {t.busy / (t.samples or 1):.0%} "
            f"| {t.waiting / (t.samples or 1):.0%} |"
        )
    for t in profile.by_size():
        if t.busy >= max(1, profile.total // 50):
            lines += _thread_tables(t)
    return "\n".join(lines) + "\n"


def _thread_tables(thread: ThreadProfile, limit: int = 15) -> list[str]:
    lines: list[str] = []
    for title, counter in (
        ("busy, self (the line on top of the stack)", thread.self_frames),
        ("busy, inclusive (event loop and start-up frames left out)", thread.inclusive),
    ):
        lines += [
            "",
            f"## {thread.name}: {title}",
            "",
            "| % | samples | frame |",
            "|---:|---:|---|",
        ]
        lines += [
            f"| {p:.1f} | {n:,} | `{name}` |"
            for name, n, p in top(counter, thread.samples, limit)
            if p >= 0.1  # below that it is noise
        ]
    return lines


# --- a flame graph without external tools -------------------------------------------------


@dataclass
class _Node:
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Mapping[tuple[str, ...], int]) -> _Node:
    root = _Node()
    for frames, count in stacks.items():
        node = root
        node.count += count
        for frame in frames:
            node = node.children.setdefault(frame, _Node())
            node.count += count
    return root


def flamegraph_svg(stacks: Mapping[tuple[str, ...], int], title: str, width: int = 1400) -> str:
    """An icicle-style flame graph (root at the top); hover a frame for its samples."""
    root = _tree(stacks)
    rows: list[str] = []
    depth = _layout(root, 0.0, 0, width / max(root.count, 1), root.count, rows)
    height = (depth + 2) * _ROW + 10
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<rect width="100%" height="100%" fill="#f8f8f8"/>'
        f'<text x="5" y="14">{html.escape(title)}</text>' + "".join(rows) + "</svg>"
    )


_ROW: Final = 17


def _layout(node: _Node, x: float, depth: int, scale: float, total: int, out: list[str]) -> int:
    deepest = depth
    for name, child in sorted(node.children.items()):
        w = child.count * scale
        if w >= 0.5:
            out.append(_frame_svg(name, child.count, total, x, depth, w))
            deepest = max(deepest, _layout(child, x, depth + 1, scale, total, out))
        x += w
    return deepest


def _frame_svg(name: str, count: int, total: int, x: float, depth: int, w: float) -> str:
    hue = zlib.crc32(name.encode()) % 40  # reds to yellows, stable per frame
    y = 20 + depth * _ROW
    label = name if len(name) * 6.6 < w - 4 else name[: max(0, int((w - 4) / 6.6) - 1)] + "…"
    text = f'<text x="{x + 2:.1f}" y="{y + 12}">{html.escape(label)}</text>' if w > 20 else ""
    return (
        f"<g><title>{html.escape(name)} — {count:,} samples ({100 * count / total:.1f}%)</title>"
        f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_ROW - 1}" '
        f'fill="hsl({hue},85%,62%)"/>{text}</g>'
    )


def write_profile_outputs(raw: Path, mode: str, seconds: float | None) -> tuple[Path, Path]:
    """From py-spy's collapsed stacks: ``profile-<mode>.svg`` and ``profile-<mode>.md``."""
    stacks = read_collapsed(raw)
    svg = raw.with_suffix(".svg")
    svg.write_text(flamegraph_svg(stacks, f"py-spy: {mode} mode ({raw.name})"), encoding="utf-8")
    report = raw.with_suffix(".md")
    report.write_text(markdown(analyse(stacks), mode, seconds), encoding="utf-8")
    return svg, report


def print_top(profile: Profile, limit: int = 10) -> None:
    """Threads, then the busiest thread's top frames and functions."""
    for t in profile.by_size():
        print(f"  {t.name}: {t.samples:,} samples, busy {t.busy / (t.samples or 1):.0%}")
    main = next((t for t in profile.by_size() if t.name == "MainThread"), None)
    if main is None:
        return
    for title, counter in (("self", main.self_frames), ("inclusive", main.inclusive)):
        print(f"  MainThread, top {limit} busy by {title} (% of the thread's samples):")
        for name, n, pct in top(counter, main.samples, limit):
            print(f"    {pct:5.1f}%  {n:>6,}  {name}")
