"""The command line end to end: real subprocesses against the real stack.

``python -m consumer run`` indexes what MinIO publishes while ``ls``/``search``/``usage``
read the same SQLite index from other processes; SIGTERM stops the run cleanly.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from tests.conftest import REPO_ROOT, StackEndpoints, unique_name
from tests.helpers import read_bucket_events, topic_end_offsets
from tests.test_output import DOCUMENTED_FIELDS

pytestmark = pytest.mark.integration

# The fields every `ls --json` line promises (the `ls` contract, docs/reference/cli/ls.md).
INTERVIEW = {"user-id": "5", "session-type": "interview"}
# key → (body, metadata); two of them carry the interview metadata.
OBJECTS: dict[str, tuple[bytes, dict[str, str] | None]] = {
    "user_5/интервью 1.ogg": (b"first interview, some audio bytes", INTERVIEW),
    "user_5/second take+plus %.ogg": (b"second take", INTERVIEW),
    "notes/plain key with spaces.txt": (b"no metadata here at all, just text", None),
}
_INHERITED_PREFIXES = (
    "MINIO_",
    "KAFKA_",
    "INDEX_",
    "INDEXER_",
    "HEALTH_",
    "LOG_",
    "SHUTDOWN_",
    "RETENTION_",
    "PROCESSING_",
    "TRANSCRIBE_",
)


def cli_env(stack: StackEndpoints, tmp_path: Path, group: str) -> dict[str, str]:
    """The environment of a CLI process: this stack, a private index, a private group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    env.update({k: v for k, v in stack.values.items() if k.startswith(("MINIO_", "KAFKA_"))})
    env.update(
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        KAFKA_GROUP_ID=group,
        KAFKA_PROCESSOR_GROUP_ID=f"{group}-processor",
        LOG_LEVEL="info",
        HEALTH_PORT="0",
        # See StackEndpoints.settings: scenarios that want it turn it on.
        RECONCILE_AUTO="false",
    )
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout_s,
        check=False,
    )


def json_rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def upload_and_wait_for_events(
    stack: StackEndpoints, minio: Minio, bucket: str, objects: dict[str, tuple[bytes, Any]]
) -> None:
    """Upload, then wait until MinIO delivered the bucket's events to Kafka (asynchronous,
    from its queue_dir store), so whatever reads the topic afterwards sees all of them."""
    bootstrap = stack.values["KAFKA_BOOTSTRAP_SERVERS"]
    start = asyncio.run(topic_end_offsets(bootstrap, stack.events_topic))
    for key, (body, metadata) in objects.items():
        minio.put_object(
            bucket, key, io.BytesIO(body), len(body), content_type="audio/ogg", metadata=metadata
        )
    found = asyncio.run(
        read_bucket_events(bootstrap, stack.events_topic, bucket, start, len(objects))
    )
    assert len(found) == len(objects), [r.value["EventName"] for r in found]


def wait_for_rows(
    env: dict[str, str], run: subprocess.Popen[bytes], stderr: Path, bucket: str, expected: int
) -> list[dict[str, Any]]:
    """`ls --json` until ``expected`` rows appear (the run process indexes meanwhile)."""
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    # `ls` refuses a missing index, so wait until `run` created it.
    index_file = Path(env["INDEX_URL"].removeprefix("sqlite:///"))
    while time.monotonic() < deadline:
        assert run.poll() is None, f"run exited early:\n{stderr.read_text()}"
        if not index_file.exists():
            time.sleep(0.2)
            continue
        rows = json_rows(run_cli(env, "ls", "--bucket", bucket, "--json"))
        if len(rows) >= expected:
            return rows
        time.sleep(0.5)
    raise AssertionError(f"only {len(rows)} of {expected} rows after 60 s:\n{stderr.read_text()}")


def stop(run: subprocess.Popen[bytes]) -> None:
    if run.poll() is None:
        run.kill()
        run.wait(timeout=10)


def test_run_indexes_uploads_queries_see_them_and_sigterm_stops_cleanly(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("cli")
    upload_and_wait_for_events(stack, minio, bucket, OBJECTS)
    env = cli_env(stack, tmp_path, unique_name("group"))
    stderr_path = tmp_path / "run.stderr"
    with stderr_path.open("wb") as stderr:
        run = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        rows = wait_for_rows(env, run, stderr_path, bucket, len(OBJECTS))

        # ls --json: one parseable object per live object, every documented field.
        assert sorted(row["key"] for row in rows) == sorted(OBJECTS)
        for row in rows:
            assert row.keys() >= DOCUMENTED_FIELDS, DOCUMENTED_FIELDS - row.keys()
            body, metadata = OBJECTS[row["key"]]
            assert row["bucket"] == bucket
            assert row["size"] == len(body)
            assert row["content_type"] == "audio/ogg"
            assert row["metadata"] == (metadata or {})
            assert row["user_id"] == ("5" if row["key"].startswith("user_5/") else None)
            assert row["etag"]
            assert row["event_time"]
            assert row["indexed_at"]

        # search: exactly the two interviews.
        found = json_rows(
            run_cli(env, "search", "session-type=interview", "--bucket", bucket, "--json")
        )
        assert sorted(row["key"] for row in found) == sorted(
            key for key, (_, meta) in OBJECTS.items() if meta
        )

        # usage by bucket: this bucket's row counts all three and their bytes.
        usage = json_rows(run_cli(env, "usage", "--by", "bucket", "--json"))
        mine = [row for row in usage if row["bucket"] == bucket]
        total = sum(len(body) for body, _ in OBJECTS.values())
        assert mine == [
            {
                "bucket": bucket,
                "objects": len(OBJECTS),
                "bytes": total,
                "stored_objects": len(OBJECTS),
                "stored_bytes": total,
            }
        ]

        # Plain ls: a header line, then one row per object.
        plain = run_cli(env, "ls", "--bucket", bucket)
        assert plain.returncode == 0, plain.stderr
        lines = plain.stdout.splitlines()
        assert len(lines) == 1 + len(OBJECTS), plain.stdout
        assert lines[0].split()[:2] == ["BUCKET", "KEY"]
        assert all(line.startswith(bucket) for line in lines[1:])
        assert sorted(key for key in OBJECTS if any(key in line for line in lines[1:])) == sorted(
            OBJECTS
        )

        # A listing cut short by --limit says so on stderr; the rows stay exactly --limit.
        cut = run_cli(env, "ls", "--bucket", bucket, "--limit", "2", "--json")
        assert cut.returncode == 0, cut.stderr
        assert len(json_rows(cut)) == 2
        assert "showing the first 2 rows; there are more" in cut.stderr
        whole = run_cli(env, "ls", "--bucket", bucket, "--limit", str(len(OBJECTS)), "--json")
        assert len(json_rows(whole)) == len(OBJECTS)
        assert "there are more" not in whole.stderr

        # SIGTERM: drain, commit, exit 0 with a clean log.
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 0, stderr_path.read_text()
    finally:
        stop(run)

    log_text = stderr_path.read_text()
    assert "Traceback" not in log_text, log_text
    entries = [json.loads(line) for line in log_text.splitlines() if line.strip()]
    assert all(isinstance(entry, dict) and "event" in entry for entry in entries), log_text
    stopped = [entry for entry in entries if entry["event"] == "consumer stopped"]
    assert len(stopped) == 1, log_text
    assert stopped[0]["events"] >= len(OBJECTS)
    assert any(entry["event"] == "shutting down" for entry in entries), log_text


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("search", "nokey"), "KEY=VALUE"),
        (("search", "=value"), "KEY=VALUE"),
        (("ls", "--limit", "0"), "at least 1"),
        (("search", "a=b", "--limit", "-3"), "at least 1"),
        (("ls", "--limit", "many"), "not a number"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    stack: StackEndpoints, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    result = run_cli(cli_env(stack, tmp_path, unique_name("group")), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_burst_run_drains_the_events_topic_and_exits_0(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("burst")
    upload_and_wait_for_events(stack, minio, bucket, {"user_9/one.ogg": (b"burst body", None)})
    env = cli_env(stack, tmp_path, unique_name("group"))

    result = run_cli(env, "run", "--burst", timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    stopped = [
        entry
        for entry in map(json.loads, result.stderr.splitlines())
        if entry["event"] == "consumer stopped"
    ]
    assert len(stopped) == 1, result.stderr
    assert stopped[0]["events"] >= 1

    # Everything published before the burst started is in the index afterwards.
    rows = json_rows(run_cli(env, "ls", "--bucket", bucket, "--json"))
    assert [(row["key"], row["user_id"], row["size"]) for row in rows] == [
        ("user_9/one.ogg", "9", len(b"burst body"))
    ]


def test_sigterm_with_a_tiny_grace_period_still_exits_0_without_traceback(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    env = {**cli_env(stack, tmp_path, unique_name("group")), "SHUTDOWN_GRACE_S": "0.01"}
    stderr_path = tmp_path / "run.stderr"
    with stderr_path.open("wb") as stderr:
        run = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=env,
            cwd=REPO_ROOT,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while "consumer running" not in stderr_path.read_text():
            assert run.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "run never reported it was running"
            time.sleep(0.2)
        time.sleep(1.0)  # inside the fetch loop now
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 0, stderr_path.read_text()
    finally:
        stop(run)
    log_text = stderr_path.read_text()
    assert "Traceback" not in log_text, log_text
    events = [json.loads(line)["event"] for line in log_text.splitlines() if line.strip()]
    assert "consumer stopped" in events, log_text


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("delete", "no-such-bucket-19/a.ogg"), "no bucket named 'no-such-bucket-19'"),
        (("delete", "user_5/x.ogg"), "bucket name 'user_5' is not valid"),
        (("upload", "FILE", "--user", "5", "--bucket", "no-such-bucket-19"), "no bucket named"),
    ],
)
def test_a_wrong_bucket_is_named_before_anything_is_sent(
    stack: StackEndpoints, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    memo = tmp_path / "memo.ogg"
    memo.write_bytes(b"x" * 1024)
    argv = [str(memo) if arg == "FILE" else arg for arg in args]
    result = run_cli(cli_env(stack, tmp_path, unique_name("group")), *argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert result.stdout == ""


def test_presign_download_prints_the_bare_url_and_json_the_method(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    import urllib.request

    bucket = make_bucket("presign")
    minio.put_object(bucket, "user_5/memo.ogg", io.BytesIO(b"memo bytes"), 10)
    env = cli_env(stack, tmp_path, unique_name("group"))
    plain = run_cli(env, "presign", "download", f"{bucket}/user_5/memo.ogg")
    assert plain.returncode == 0, plain.stderr
    (url,) = plain.stdout.splitlines()
    with urllib.request.urlopen(url, timeout=10) as response:  # what curl "$(…)" does
        assert response.read() == b"memo bytes"
    (request,) = json_rows(
        run_cli(env, "presign", "download", f"{bucket}/user_5/memo.ogg", "--json")
    )
    assert (request["method"], request["url"].split("?")[0]) == ("GET", url.split("?")[0])
