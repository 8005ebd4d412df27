"""The install cache: built binaries and downloaded jars live outside the clone, shared
by every clone on the machine and keyed by the pinned versions, so CI on a fresh clone
does not rebuild MinIO."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from infra.stack.common import StackError, say, tail


def cache_dir() -> Path:
    """Where built binaries and downloaded jars live, shared by every clone on the machine."""
    explicit = os.environ.get("VOXPERSONA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxpersona"


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"'{name}' not found on PATH: {hint}")
    return path


def run_logged(cmd: list[str], log_path: Path, env: dict[str, str], what: str) -> None:
    """Run a long install step with its output in a log, saying every 30 s that it still
    works; fail with the log's last line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        started = time.monotonic()
        next_report_s = 30.0
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                elapsed = time.monotonic() - started
                if elapsed >= next_report_s:
                    say(f"{what}: still working ({elapsed:.0f}s, log: {log_path})")
                    next_report_s += 30.0
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}): {tail(log_path, 1)}; log: {log_path}"
        )
