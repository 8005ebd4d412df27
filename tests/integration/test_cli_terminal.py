"""The command line at a real terminal (a pseudo-terminal), as a person meets it."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from minio import Minio

from tests.conftest import REPO_ROOT, StackEndpoints, unique_name
from tests.integration.test_cli_e2e import cli_env, run_cli, upload_and_wait_for_events

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


def _read_all(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """Everything the child writes until it exits (or ``timeout_s``)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    return seen


class Terminal:
    """A child process on a pseudo-terminal of ``columns`` × 40."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], columns: int = 100) -> None:
        self.main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", *argv],
            stdin=child,
            stdout=child,
            stderr=child,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        os.close(child)

    def run(self, timeout_s: float = 120) -> tuple[int, bytes]:
        try:
            raw = _read_all(self.main, self.proc, timeout_s)
            return self.proc.wait(timeout=30), raw
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.main)


_CSI = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")


def screen_lines(raw: bytes) -> list[str]:
    """What a terminal shows for ``raw``: carriage returns, erase-line and newlines
    applied, colours dropped. (A pty turns "\\n" into "\\r\\n".)"""
    lines: list[str] = [""]
    column = 0
    text = raw.decode(errors="replace")
    position = 0
    while position < len(text):
        char = text[position]
        found = _CSI.match(text, position) if char == "\x1b" else None
        if found is not None:
            if found.group(2) == "K":
                lines[-1] = lines[-1][:column]
            position = found.end()
            continue
        if char == "\n":
            lines.append("")
            column = 0
        elif char == "\r":
            column = 0
        else:
            line = lines[-1]
            lines[-1] = line[:column] + char + line[column + 1 :]
            column += 1
        position += 1
    return lines[:-1] if lines[-1] == "" else lines


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


def test_ctrl_c_while_an_upload_hashes_its_file_stops_at_once(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("ctrlhash")
    big = tmp_path / "huge.wav"
    with big.open("wb") as out:  # 1.5 GiB: reading it for its checksums takes seconds
        out.truncate(1536 * 1024 * 1024)
    env = cli_env(stack, tmp_path, unique_name("group"))
    env["LOG_LEVEL"] = "warning"
    terminal = Terminal(["upload", str(big), "--user", "5", "--bucket", bucket], env)
    try:
        before = _read_until(terminal.main, b"checksums", timeout_s=60)
        assert b"checksums" in before, before.decode(errors="replace")
        time.sleep(0.3)  # well inside the hashing, which takes several seconds
        sent = time.monotonic()
        os.killpg(terminal.proc.pid, signal.SIGINT)
        after = _read_all(terminal.main, terminal.proc, timeout_s=60)
        code = terminal.proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        terminal.close()
    screen = screen_lines(before + after)
    assert code == 130, screen
    assert screen[-1] == "consumer: interrupted", screen
    assert not any("Traceback" in line for line in screen), screen
    # Without the cancel switch in the hashing thread, asyncio.run waits for it to read
    # the whole file (5 to 10 s here, depending on the load).
    assert took < 4.0, f"exit took {took:.1f} s after Ctrl-C"
    assert [o.object_name for o in minio.list_objects(bucket, recursive=True)] == []
    assert not minio._list_multipart_uploads(bucket).uploads


def test_log_lines_go_above_the_live_line_never_into_it(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    memo = tmp_path / "memo.ogg"
    memo.write_bytes(b"x" * 4096)
    env = cli_env(stack, tmp_path, unique_name("group"))
    # Nothing listens on port 9: the bucket check is retried, and minio's urllib3 and
    # our retry loop both warn while the upload's live line is on the screen.
    env.update(
        LOG_LEVEL="warning",
        MINIO_ENDPOINT="127.0.0.1:9",
        MINIO_MAX_RETRIES="1",
        MINIO_RETRY_BACKOFF="0.05",
    )
    code, raw = Terminal(["upload", str(memo), "--user", "5", "--bucket", "b1b"], env).run()
    screen = screen_lines(raw)
    assert code == 1, screen
    warnings = [line for line in screen if "etrying" in line]
    assert warnings, screen
    for line in warnings:
        assert "checksums" not in line, screen  # never on the live line
        assert "memo.ogg [" not in line, screen
    # The live line came back under each warning and ended as the failed bar.
    assert screen[-1].startswith("memo.ogg ["), screen
    assert "failed: check bucket b1b" in screen[-1]
    assert "unreachable" in screen[-1]


def test_tables_fit_the_terminal_and_reconcile_clears_its_progress_line(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("fit")
    objects: dict[str, tuple[bytes, dict[str, str] | None]] = {
        f"user_5/2026-11-21/4f1c0a9b2e7d-a rather long interview name {n}.ogg": (
            b"x" * (1500 * (n + 1)),
            {"user-id": "5", "session-type": "interview", "original-name": f"take {n}.ogg"},
        )
        for n in range(3)
    }
    upload_and_wait_for_events(stack, minio, bucket, objects)
    env = cli_env(stack, tmp_path, unique_name("group"))
    env["LOG_LEVEL"] = "warning"
    burst = run_cli(env, "run", "--burst", timeout_s=180)
    assert burst.returncode == 0, burst.stderr[-2000:]

    for columns in (100, 120):
        code, raw = Terminal(["ls", "--bucket", bucket], env, columns=columns).run()
        screen = screen_lines(raw)
        assert code == 0, screen
        assert len(screen) == 1 + len(objects), screen  # no row wrapped
        assert all(len(line) <= columns for line in screen), screen
        assert screen[0].split()[:2] == ["BUCKET", "KEY"]
        for line in screen[1:]:
            assert re.search(r"\d\.\d KiB", line), line  # a human size
            assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d(\s|$)", line), line  # to the minute
            assert "+00:00" not in line
    # The same listing through a pipe keeps every value whole (the default --limit).
    piped = run_cli(env, "ls", "--bucket", bucket)
    assert all(key in piped.stdout for key in objects)
    assert "+00:00" in piped.stdout

    code, raw = Terminal(["reconcile", "--bucket", bucket], env).run()
    screen = screen_lines(raw)
    assert code == 0, screen
    summary = [line for line in screen if line.startswith("reconcile ")]
    assert len(summary) == 1, screen
    assert "missing=0" in summary[0]
    assert not any("listed" in line and "reconcile " in line[1:] for line in screen), screen
    assert b"listed" in raw  # the progress line was drawn, then cleared


def test_no_progress_and_quiet_keep_stderr_for_errors(
    stack: StackEndpoints, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("quiet")
    memo = tmp_path / "memo.ogg"
    memo.write_bytes(b"y" * (9 * 1024 * 1024))  # two parts
    env = cli_env(stack, tmp_path, unique_name("group"))
    env["LOG_LEVEL"] = "warning"
    argv = ["upload", str(memo), "--user", "5", "--bucket", bucket]
    code, raw = Terminal([*argv, "--no-progress"], env).run()
    screen = screen_lines(raw)
    assert code == 0, screen
    assert len(screen) == 1, screen  # the uploaded object's line, no bar
    assert screen[0].startswith(f"{bucket}/user_5/")
    code, raw = Terminal([*argv, "--quiet"], env).run()
    assert code == 0
    assert len(screen_lines(raw)) == 1
    shown = Terminal([*argv], env)
    code, raw = shown.run()
    assert code == 0
    assert b"9.0 MiB/9.0 MiB" in raw  # with neither, the bar is drawn


def test_cat_refuses_to_write_audio_to_a_terminal(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("cat")
    minio.put_object(bucket, "user_5/a.ogg", io.BytesIO(b"OggS\x00\x02"), 6, "audio/ogg")
    env = cli_env(stack, tmp_path, unique_name("group"))
    code, raw = Terminal(["cat", f"{bucket}/user_5/a.ogg"], env).run()
    screen = screen_lines(raw)
    assert code == 2, screen
    assert screen == [
        f"consumer: error: {bucket}/user_5/a.ogg is audio/ogg: not written to a terminal"
        " (redirect stdout, or use download)"
    ]
