"""Debian packages the stack's optional servers and the browser test need (Prometheus
with promtool, Chromium), installed with apt-get the first time, as root."""

from __future__ import annotations

import os
import shutil
import subprocess

from infra.stack.common import StackError, say

# Waits for another apt-get (a second test worker, the engine's install) to finish.
_APT_LOCK_TIMEOUT_S = 600


def ensure_debian_package(package: str, binary: str) -> str:
    """The path of ``binary``; apt-get installs ``package`` first when it is missing."""
    found = shutil.which(binary)
    if found is not None:
        return found
    if not shutil.which("apt-get"):
        raise StackError(f"'{binary}' not found and no apt-get: install {package}")
    if os.geteuid() != 0:
        raise StackError(f"'{binary}' not found: apt-get install {package} (needs root)")
    say(f"installing {package} with apt-get (first time only)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = f"DPkg::Lock::Timeout={_APT_LOCK_TIMEOUT_S}"
    for cmd in (
        ["apt-get", "-o", lock, "update", "-qq"],
        ["apt-get", "-o", lock, "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            last = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()
            raise StackError(f"{' '.join(cmd[:1] + cmd[3:])} failed: {last[-1] if last else ''}")
    found = shutil.which(binary)
    if found is None:
        raise StackError(f"apt-get installed {package} but '{binary}' is not on PATH")
    return found
