"""download, stat, cat, `ls --status failed` and `status` as subprocesses against the real
stack (issue 19)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from minio import Minio

from tests.conftest import REPO_ROOT, StackEndpoints, unique_name
from tests.integration.test_cli_e2e import cli_env, json_rows, run_cli, upload_and_wait_for_events

pytestmark = pytest.mark.integration

BODY = "первая строка\nsecond line\n".encode()


def _one_line(result: object, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in lines[0]
    return str(lines[0])


def test_stat_cat_and_download_an_object(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("read")
    key = "user_5/notes/транскрипт.txt"
    minio.put_object(
        bucket,
        key,
        io.BytesIO(BODY),
        len(BODY),
        content_type="text/plain",
        metadata={"user-id": "5", "session-type": "interview"},
    )
    env = cli_env(stack, tmp_path, unique_name("group"))

    (stat,) = json_rows(run_cli(env, "stat", f"{bucket}/{key}", "--json"))
    assert {k: stat[k] for k in ("bucket", "key", "size", "content_type")} == {
        "bucket": bucket,
        "key": key,
        "size": len(BODY),
        "content_type": "text/plain",
    }
    assert stat["metadata"] == {"session-type": "interview", "user-id": "5"}
    assert stat["etag"] == minio.stat_object(bucket, key).etag
    assert stat["last_modified"]
    plain = run_cli(env, "stat", key, "--bucket", bucket)
    assert plain.returncode == 0, plain.stderr
    assert f"size           {len(BODY)} ({len(BODY)} B)" in plain.stdout
    assert "meta user-id   5" in plain.stdout

    cat = run_cli(env, "cat", f"{bucket}/{key}")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.encode() == BODY

    target = tmp_path / "out"
    target.mkdir()
    saved = run_cli(env, "download", f"{bucket}/{key}", "-o", str(target), "--json")
    (row,) = json_rows(saved)
    path = target / "транскрипт.txt"
    assert row["path"] == str(path)
    assert path.read_bytes() == BODY
    assert [p.name for p in target.iterdir()] == [path.name]  # no part file left behind
    # An existing file is never replaced silently; --force replaces it.
    path.write_bytes(b"mine")
    refused = run_cli(env, "download", f"{bucket}/{key}", "-o", str(target))
    assert "exists; --force replaces it" in _one_line(refused, 2)
    assert path.read_bytes() == b"mine"
    forced = run_cli(env, "download", f"{bucket}/{key}", "-o", str(path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert path.read_bytes() == BODY
    assert "→" in forced.stderr

    # A key that is not there: one line, exit 1; a wrong bucket: one line, exit 2.
    for verb in ("stat", "cat", "download"):
        missing = run_cli(env, verb, f"{bucket}/user_5/nothing.txt", "-o", str(tmp_path / "n"))
        if verb != "download":
            missing = run_cli(env, verb, f"{bucket}/user_5/nothing.txt")
        assert "NoSuchKey" in _one_line(missing, 1), verb
        assert missing.stdout == ""
        wrong = run_cli(env, verb, f"no-such-bucket-19/{key}")
        assert "no bucket named 'no-such-bucket-19'" in _one_line(wrong, 2), verb
    assert not (tmp_path / "n").exists()


def test_ls_status_failed_shows_each_jobs_last_error(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket, results = make_bucket("fail"), make_bucket("res")
    broken = b"this is not audio at all"
    # Published to Kafka before the burst starts (MinIO delivers asynchronously).
    upload_and_wait_for_events(stack, minio, bucket, {"user_4/broken.ogg": (broken, None)})
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"bucket": bucket, "processors": ["audio-probe"]}]}))
    env = cli_env(stack, tmp_path, unique_name("group"))
    env.update(
        MINIO_AUDIO_BUCKET_NAME=bucket,
        MINIO_RESULTS_BUCKET_NAME=results,
        PROCESSING_RULES_FILE=str(rules),
    )
    ran = run_cli(env, "run", "--burst", timeout_s=180)
    assert ran.returncode == 0, ran.stderr[-3000:]

    (row,) = json_rows(run_cli(env, "ls", "--bucket", bucket, "--status", "failed", "--json"))
    assert row["processing_status"] == "failed"
    assert set(row["errors"]) == {"audio-probe"}
    assert row["errors"]["audio-probe"]  # the reason the processor gave
    plain = run_cli(env, "ls", "--bucket", bucket, "--status", "failed")
    assert plain.returncode == 0, plain.stderr
    header, line = plain.stdout.splitlines()
    assert "LAST_ERROR" in header.split()
    assert f"audio-probe: {' '.join(row['errors']['audio-probe'].split())}" in line
    # Objects without a failed job carry no errors.
    assert json_rows(run_cli(env, "ls", "--bucket", bucket, "--status", "done", "--json")) == []


class _NotHere(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_404() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotHere)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_status_prints_no_http_request_log_above_its_table(
    stack: StackEndpoints, tmp_path: Path, http_404: int
) -> None:
    env = cli_env(stack, tmp_path, unique_name("group"))
    # Something answers on HEALTH_PORT (not a consumer), so httpx makes a request and
    # would log it at INFO; LOG_LEVEL=info asks for the consumer's own INFO lines.
    env.update(LOG_LEVEL="info", HEALTH_PORT=str(http_404))
    result = run_cli(env, "status", timeout_s=120)
    assert result.returncode == 1, result.stderr  # nothing running: unhealthy
    assert "HTTP Request" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[0].split() == ["status", "unhealthy"]
    assert json.loads(run_cli(env, "status", "--json", timeout_s=120).stdout)["status"] == (
        "unhealthy"
    )


def test_a_reader_that_leaves_early_is_no_error(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("pipe")
    big = b"a line of text\n" * 400_000  # 6 MB: far more than a pipe holds
    minio.put_object(bucket, "user_5/long.txt", io.BytesIO(big), len(big), "text/plain")
    env = cli_env(stack, tmp_path, unique_name("group"))
    cat = subprocess.Popen(
        [sys.executable, "-m", "consumer", "cat", f"{bucket}/user_5/long.txt"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    assert cat.stdout is not None
    assert cat.stdout.read(15) == b"a line of text\n"
    cat.stdout.close()  # what `| head -1` does
    _, stderr = cat.communicate(timeout=60)
    assert cat.returncode == 0, stderr
    assert stderr == b""
