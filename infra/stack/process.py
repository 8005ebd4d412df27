"""Processes of the stack: spawning a server in a session of its own, telling whether a
pid is still ours, stopping a process group, waiting for readiness, one-shot commands."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.stack.common import STOP_TIMEOUT_S, StackError, say, tail


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1]
    except (OSError, IndexError):
        return True
    return not status.startswith("Z")


def pid_belongs_to(pid: int, state_dir: Path) -> bool:
    """True when the process' command line mentions our state dir (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return str(state_dir).encode() in cmdline


def stop_process_group(pid: int, first: signal.Signals = signal.SIGTERM) -> None:
    """``first`` (the server's own stop signal), then SIGKILL after STOP_TIMEOUT_S."""
    for sig in (first, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.1)
    say(f"pid {pid} did not stop")


def run_as(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to ``user`` with its own group (not root's group 0)."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def run_checked(
    cmd: list[str],
    log_path: Path | None,
    user: str | None,
    what: str,
    *,
    secrets: tuple[str, ...] = (),
) -> str:
    """Run a short command; its output goes to ``log_path``; its stdout is returned. A
    failure is one line (the command's last line of output). ``secrets`` (passwords on
    its command line) are masked in the log and the error, should the tool echo them."""
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **run_as(user))
    output = _masked(result.stdout + result.stderr, secrets)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(output)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise StackError(f"{what} failed (exit {result.returncode}): {_masked(last[0], secrets)}")
    return str(result.stdout)


def _masked(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def wait_for(
    name: str, check: Callable[[], bool], timeout_s: float, log: Path, alive: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise StackError(f"{name} exited during start-up; last lines of {log}:\n{tail(log)}")
        if check():
            return
        time.sleep(0.25)
    raise StackError(f"{name} not ready after {timeout_s:.0f}s; last lines of {log}:\n{tail(log)}")


class Children:
    """The server processes one Stack object started: reaped when they exit (no zombies,
    no ResourceWarning when up and down run in one process, as in the test fixtures)."""

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, cmd: list[str], env: dict[str, str], log: Path, **popen: object) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # A session of its own: Ctrl-C in the terminal does not reach the servers
            # directly; ``up`` decides what to stop, and ``down`` stops the whole group.
            proc = subprocess.Popen(  # type: ignore[call-overload]
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                **popen,
            )
        self._procs[proc.pid] = proc
        return int(proc.pid)

    def __contains__(self, pid: int) -> bool:
        return pid in self._procs

    def is_alive(self, pid: int) -> bool:
        """Alive check that also reaps: our own children are polled (so a dead one is
        collected, not left a zombie), other pids are looked up in /proc."""
        child = self._procs.get(pid)
        if child is None:
            return pid_alive(pid)
        if child.poll() is None:
            return True
        del self._procs[pid]
        return False

    def reap(self) -> None:
        """Collect children that have exited, whoever stopped them (a `stop` run from
        another process, a crash): no zombies, no "still running" warnings."""
        for pid, child in list(self._procs.items()):
            if child.poll() is not None:
                del self._procs[pid]

    def stopped(self, pid: int) -> None:
        """``pid``'s group was stopped: wait for our child, if it is one."""
        child = self._procs.pop(pid, None)
        if child is not None:
            child.wait(timeout=STOP_TIMEOUT_S)
