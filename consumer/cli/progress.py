"""Progress on stderr for the CLI: redrawn in place on a terminal, a few plain lines
otherwise (CI logs, pipes), so stdout stays clean for ``--json``.

On a terminal the bottom line belongs to whatever shows progress (an upload's bar,
reconcile's counter); a ``Screen`` writes everything else (log lines, retry warnings)
above it and redraws it, so a warning never cuts into a bar.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Final, TextIO

from consumer.cli.output import human_bytes

_WIDTH: Final = 28
_PLAIN_STEPS: Final = 4  # quarter marks when stderr is not a terminal
_REDRAW_EVERY_S: Final = 0.1
_CLEAR_LINE: Final = "\r\033[K"


def render_bar(label: str, done: int, total: int, *, elapsed_s: float, unit: str = "bytes") -> str:
    """One line: ``label [#####.....]  42%  12.0 MiB/28.6 MiB  3.1 MiB/s  ETA 0:07``. Pure."""
    fraction = min(1.0, done / total) if total else 1.0
    filled = int(fraction * _WIDTH)
    bar = "#" * filled + "." * (_WIDTH - filled)
    if unit == "bytes":
        amounts = f"{human_bytes(done)}/{human_bytes(total)}"
        rate = f"  {human_bytes(int(done / elapsed_s))}/s" if elapsed_s > 0 else ""
    else:
        amounts = f"{done}/{total} {unit}"
        rate = ""
    eta = ""
    if 0 < done < total and elapsed_s > 0:
        eta = f"  ETA {clock_time((total - done) * elapsed_s / done)}"
    return f"{label} [{bar}] {fraction:4.0%}  {amounts}{rate}{eta}"


def clock_time(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``: a duration as a clock shows it. Pure."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Screen:
    """A stream (stderr) with one live bottom line on a terminal. ``show`` redraws the
    live line; ``write`` (what logging calls) puts text above it and redraws it, so log
    lines and bars never share a line. Thread-safe: upload threads draw bars."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._line = ""
        self._lock = threading.RLock()

    def show(self, line: str) -> None:
        """Replace the live line (on a terminal; elsewhere nothing is drawn)."""
        if not self.live:
            return
        with self._lock:
            self._line = line
            self.stream.write(f"{_CLEAR_LINE}{line}")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the live line, so that what follows starts on a clean line."""
        with self._lock:
            if self._line:
                self.stream.write(_CLEAR_LINE)
                self.stream.flush()
                self._line = ""

    def keep(self, suffix: str = "") -> None:
        """End the live line where it is (with ``suffix``) and keep it on the screen."""
        with self._lock:
            if self._line:
                self.stream.write(f"{suffix}\n")
                self.stream.flush()
                self._line = ""

    def write(self, text: str) -> int:
        with self._lock:
            if self._line:
                self.stream.write(_CLEAR_LINE)
            self.stream.write(text)
            if self._line:
                if text.endswith("\n"):
                    self.stream.write(self._line)
                else:  # someone else's partial line now owns the bottom
                    self._line = ""
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.live


_screens: dict[int, Screen] = {}
_screens_lock = threading.Lock()


def screen_of(stream: TextIO | None = None) -> Screen:
    """The one Screen of ``stream`` (default: the current sys.stderr)."""
    stream = stream if stream is not None else sys.stderr
    if isinstance(stream, Screen):
        return stream
    with _screens_lock:
        found = _screens.get(id(stream))
        if found is None or found.stream is not stream:
            found = _screens[id(stream)] = Screen(stream)
        return found


class ProgressBar:
    """Thread-safe: upload threads call ``update``; ``finish`` ends the line.
    ``enabled=False`` (``--no-progress``, ``--quiet``) draws nothing at all."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "bytes",
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self._label = label
        self._total = total
        self._unit = unit
        self._screen = screen_of(stream)
        self._enabled = enabled
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._next_mark = 1
        self._done = 0
        self._lock = threading.Lock()

    def status(self, text: str) -> None:
        """``label: text`` on the live line until the bar moves (e.g. while hashing)."""
        if self._enabled:
            self._screen.show(f"{self._label}: {text}")

    def update(self, done: int) -> None:
        if not self._enabled:
            return
        with self._lock:
            self._done = done
            if self._screen.live:
                now = time.monotonic()
                if now - self._last_draw >= _REDRAW_EVERY_S:
                    self._last_draw = now
                    self._screen.show(self._line())
            elif self._total and done * _PLAIN_STEPS >= self._next_mark * self._total:
                while done * _PLAIN_STEPS >= self._next_mark * self._total:
                    self._next_mark += 1
                if done < self._total:  # finish() prints the 100 % line
                    self._screen.write(f"{self._line()}\n")

    def finish(self, failure: str = "") -> None:
        """End the bar: complete, or where it stopped with ``failure`` after it."""
        if not self._enabled:
            return
        with self._lock:
            if not failure:
                self._done = self._total
            if self._screen.live:
                self._screen.show(self._line())
                self._screen.keep(failure)
            else:
                self._screen.write(f"{self._line()}{failure}\n")

    def _line(self) -> str:
        return render_bar(
            self._label,
            self._done,
            self._total,
            elapsed_s=time.monotonic() - self._started,
            unit=self._unit,
        )
