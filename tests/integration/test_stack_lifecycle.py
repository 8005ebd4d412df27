"""infra/stack on its own: a killed run's stale state does not break the next `up`, and
`down` leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from infra.stack import Stack
from infra.stack.process import pid_alive

pytestmark = pytest.mark.integration


def test_stale_state_from_a_killed_run_then_clean_down(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    first = stack.up()
    try:
        pids = dict(first.pids)
        assert set(pids) == {"minio", "kafka", "postgres"}
        # A second `up` on a running, ready stack changes nothing.
        assert stack.up().pids == pids
        # Simulate a killed run: every server dies without `down`; state.json stays.
        for pid in pids.values():
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        # running_pids() also reaps the dead children, as the next `up` would.
        while stack.running_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stack.status() == {name: "stopped" for name in pids}

        # A new Stack object, as a new `python -m infra.stack up` process would make.
        restarted = Stack(tmp_path / "stack")
        second = restarted.up()
        assert set(second.pids) == {"minio", "kafka", "postgres"}
        assert second.pids != pids
        env = stack.env()
        assert env["MINIO_ENDPOINT"].startswith("127.0.0.1:")
        assert env["KAFKA_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")
    finally:
        stopped = restarted.down(quiet=True) if "restarted" in locals() else stack.down()
    assert sorted(stopped) == ["kafka", "minio", "postgres"]
    assert not any(pid_alive(pid) for pid in (stack.load_state() or first).pids.values())
    for pid in second.pids.values():
        assert not pid_alive(pid)
