"""The benchmark child's CPU accounting (bench/child.py): the machine's busy time over a
measured window, read from /proc/stat. No server needed."""

from __future__ import annotations

import time

from bench.child import Window, machine_busy_s


def _spin(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_the_machine_busy_time_covers_this_process_cpu() -> None:
    # Every CPU second this process spends is a busy second of the machine; others may add.
    own_before, busy_before = time.process_time(), machine_busy_s()
    _spin(0.3)
    own = time.process_time() - own_before
    busy = machine_busy_s() - busy_before
    assert busy >= own - 0.05  # /proc/stat counts in ticks of 10 ms


def test_a_window_reports_its_wall_seconds_and_busy_cpu() -> None:
    window = Window.start()
    _spin(0.2)
    window.end()
    assert 0.2 <= window.seconds < 10
    assert window.busy_s >= 0.15
