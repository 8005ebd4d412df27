"""A progress bar on stderr for the CLI: redrawn in place on a terminal, a few plain lines
otherwise (CI logs, pipes), so stdout stays clean for ``--json``."""

from __future__ import annotations

import sys
import threading
import time
from typing import Final, TextIO

from consumer.output import human_bytes

_WIDTH: Final = 28
_PLAIN_STEPS: Final = 4  # quarter marks when stderr is not a terminal
_REDRAW_EVERY_S: Final = 0.1


def render_bar(label: str, done: int, total: int, *, elapsed_s: float, unit: str = "bytes") -> str:
    """One line: ``label [#####.....]  42%  12.0 MiB/28.6 MiB  3.1 MiB/s``. Pure."""
    fraction = min(1.0, done / total) if total else 1.0
    filled = int(fraction * _WIDTH)
    bar = "#" * filled + "." * (_WIDTH - filled)
    if unit == "bytes":
        amounts = f"{human_bytes(done)}/{human_bytes(total)}"
        rate = f"  {human_bytes(int(done / elapsed_s))}/s" if elapsed_s > 0 else ""
    else:
        amounts = f"{done}/{total} {unit}"
        rate = ""
    return f"{label} [{bar}] {fraction:4.0%}  {amounts}{rate}"


class ProgressBar:
    """Thread-safe: upload threads call ``update``; ``finish`` ends the line."""

    def __init__(
        self, label: str, total: int, *, unit: str = "bytes", stream: TextIO | None = None
    ) -> None:
        self._label = label
        self._total = total
        self._unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._next_mark = 1
        self._done = 0
        self._lock = threading.Lock()

    def update(self, done: int) -> None:
        with self._lock:
            self._done = done
            if self._tty:
                now = time.monotonic()
                if now - self._last_draw >= _REDRAW_EVERY_S:
                    self._last_draw = now
                    self._draw("\r")
            elif self._total and done * _PLAIN_STEPS >= self._next_mark * self._total:
                while done * _PLAIN_STEPS >= self._next_mark * self._total:
                    self._next_mark += 1
                if done < self._total:  # finish() prints the 100 % line
                    self._draw("", "\n")

    def finish(self, failure: str = "") -> None:
        """End the bar: complete, or where it stopped with ``failure`` after it."""
        with self._lock:
            if not failure:
                self._done = self._total
            self._draw("\r" if self._tty else "", f"{failure}\n")

    def _draw(self, start: str, end: str = "") -> None:
        line = render_bar(
            self._label,
            self._done,
            self._total,
            elapsed_s=time.monotonic() - self._started,
            unit=self._unit,
        )
        self._stream.write(f"{start}{line}{end}")
        self._stream.flush()
