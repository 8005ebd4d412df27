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


def go_installed_binary(*, name: str, package: str, version: str, binary: str) -> Path:
    """``package@version`` built with ``go install`` into the cache (once), the path of
    its ``binary``. The Go build caches live in the cache too, so a fresh clone reuses
    them."""
    target_dir = cache_dir() / name.lower() / version
    built = target_dir / binary
    if built.is_file() and os.access(built, os.X_OK):
        return built
    go = require_tool("go", f"install Go >= 1.24 (https://go.dev/doc/install) to build {name}")
    say(f"building {name} {version} with go install (first time only)")
    env = {
        **os.environ,
        "GOBIN": str(target_dir),
        "GOPATH": str(cache_dir() / "go"),
        "GOMODCACHE": str(cache_dir() / "gomod"),
        "GOCACHE": str(cache_dir() / "gobuild"),
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }
    started = time.monotonic()
    run_logged(
        [go, "install", f"{package}@{version}"],
        cache_dir() / "logs" / f"{name.lower()}-build.log",
        env,
        f"building {name}",
    )
    if not built.is_file():
        raise StackError(f"go install finished but {built} is missing")
    say(f"{name} built in {time.monotonic() - started:.0f}s: {built}")
    return built
