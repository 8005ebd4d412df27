"""The command line at a real terminal (a pseudo-terminal), as a person meets it."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio

from tests.conftest import REPO_ROOT, StackEndpoints, unique_name
from tests.integration.test_cli_e2e import cli_env

pytestmark = pytest.mark.integration


def _read_until(fd: int, needle: bytes, timeout_s: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_ctrl_c_cancels_an_upload_in_flight_nothing_stored_exit_130(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("ctrlc")
    big = tmp_path / "big.wav"
    with big.open("wb") as out:  # 512 MiB of zeros: 64 parts, far longer than the signal takes
        out.truncate(512 * 1024 * 1024)
    env = cli_env(stack, tmp_path, unique_name("group"))
    env.update(LOG_LEVEL="warning", COLUMNS="100")
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "upload", str(big), "--user", "5", "--bucket", bucket],
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    os.close(child)
    try:
        # The bar shows MiB sent once the first parts went out: the upload is in flight.
        before = _read_until(main, b".0 MiB/512.0 MiB", timeout_s=120)
        assert b".0 MiB/512.0 MiB" in before, before.decode(errors="replace")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at the terminal sends
        after = _read_until(main, b"consumer: interrupted", timeout_s=60)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    screen = (before + after).decode(errors="replace")
    assert code == 130, screen
    assert "Traceback" not in screen, screen
    assert "consumer: interrupted" in screen
    # Nothing stored, and the multipart upload was aborted rather than left behind.
    stored = [o.object_name for o in minio.list_objects(bucket, recursive=True)]
    assert stored == [], screen[-2000:]
    uploads = minio._list_multipart_uploads(bucket)  # no public listing
    assert not uploads.uploads, [u.object_name for u in uploads.uploads]
