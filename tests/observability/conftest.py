"""The session's stack seen as an SRE sees it: Zipkin and Prometheus started beside it
(once per session, only when a test here asks), the consumer running as ``make
run-observed`` runs it, and real traffic through it:

- a voice note uploaded through the bot's presigned flow (``presign upload``, then the
  uploader's POST), with tracing on: its trace goes from the bot's presign through the
  indexing and the processing to the processors' MinIO calls;
- a voice note uploaded with ``upload`` (its upload span is the root of its trace);
- a voice note whose transcription API keeps answering 503: retries run out, a dead letter;
- a scratch file a retention policy expires after a second, and the dead-lettered recording
  another policy must keep (skipped: not processed).

Screenshots and the consumer's log go to ``test-artifacts/observability`` (kept by CI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import audio
from tests.conftest import REPO_ROOT, StackEndpoints, unique_name
from tests.integration.test_cli_e2e import cli_env, run_cli
from tests.transcription_server import Answer, SeenRequest, StandIn

ARTIFACTS = Path(os.environ.get("VOXPERSONA_TEST_ARTIFACTS", str(REPO_ROOT / "test-artifacts")))
_READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Observed:
    # The consumer's and the CLI's environment (tracing on); it holds the stack's secrets.
    env: dict[str, str] = field(repr=False)
    zipkin_url: str
    prometheus_url: str
    consoles_url: str
    audio_bucket: str
    presigned_key: str
    presign_trace_id: str
    uploaded_key: str
    upload_trace_id: str
    dead_lettered_key: str
    expired_key: str  # in env["MINIO_BUCKET_NAME"]
    artifacts: Path


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """``check()``'s first truthy value, polled every half second."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def get_json(url: str) -> Any:
    """The JSON answer (an error's too: Prometheus explains a bad query in its 400);
    None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        try:
            return json.load(error)
        except ValueError:
            return None
    except OSError:
        return None


def trace_id_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


def _policies(path: Path, storage: str, audio_bucket: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "policies": [
                    {"name": "scratch", "bucket": storage, "prefix": "user_9/", "seconds": 1},
                    {
                        "name": "processed-recordings",
                        "bucket": audio_bucket,
                        "prefix": "user_8/",
                        "seconds": 1,
                        "only_processed": True,
                    },
                ]
            }
        )
    )
    return path


def _environment(
    stack: StackEndpoints, work: Path, transcription_url: str
) -> tuple[dict[str, str], str]:
    control = stack.control
    assert control is not None
    group = unique_name("observed")
    storage, audio_bucket, results = (unique_name(p) for p in ("store", "audio", "results"))
    env = cli_env(stack, work, group)
    env.update(
        {k: v for k, v in control.env().items() if k.startswith(("OTEL_", "HEALTH_PORT"))},
        MINIO_BUCKET_NAME=storage,
        MINIO_AUDIO_BUCKET_NAME=audio_bucket,
        MINIO_RESULTS_BUCKET_NAME=results,
        KAFKA_DLQ_TOPIC=unique_name("observed-dlq"),
        MINIO_MAX_RETRIES="1",
        MINIO_RETRY_BACKOFF="0.2",
        TRANSCRIBE_BASE_URL=transcription_url,
        RETENTION_POLICIES_FILE=str(_policies(work / "policies.json", storage, audio_bucket)),
        RETENTION_SWEEP_INTERVAL_S="1",
        INDEX_STORAGE_COUNT_INTERVAL_S="1",
        # Its own buckets only (the notification file names them): the automatic
        # reconcile's panels have series, and MinIO's queue is read often.
        RECONCILE_AUTO="true",
        MINIO_METRICS_INTERVAL_S="2",
        LOG_LEVEL="info",
    )
    return env, audio_bucket


def _start_consumer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    setup = run_cli(env, "setup")
    assert setup.returncode == 0, setup.stderr
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ready = f"http://127.0.0.1:{env['HEALTH_PORT']}/readyz"
    wait_until(
        lambda: process.poll() is not None or (get_json(ready) or {}).get("ready"),
        "the consumer's /readyz",
        _READY_TIMEOUT_S,
    )
    assert process.poll() is None, log.read_text()[-3000:]
    return process


def _presigned_upload(env: dict[str, str], note: Path) -> tuple[str, str]:
    """The bot's flow: ``presign upload`` (traced), then the uploader POSTs the form."""
    presigned = run_cli(env, "presign", "upload", "--user", "7", "--name", note.name, "--json")
    assert presigned.returncode == 0, presigned.stderr
    post = json.loads(presigned.stdout)
    with note.open("rb") as body:
        response = httpx.post(
            post["url"], data=post["fields"], files={"file": (note.name, body)}, timeout=30
        )
    assert response.status_code in (200, 204), response.text
    return post["key"], trace_id_of(post["fields"]["x-amz-meta-traceparent"])


def _cli_upload(env: dict[str, str], path: Path, user: str, *extra: str) -> dict[str, Any]:
    uploaded = run_cli(env, "upload", str(path), "--user", user, "--json", "--quiet", *extra)
    assert uploaded.returncode == 0, uploaded.stderr
    row: dict[str, Any] = json.loads(uploaded.stdout)
    return row


class _Overloaded(StandIn):
    """The transcription stand-in, answering 503 for every file named ``*flaky.wav``."""

    def _answer(self, seen: SeenRequest) -> Answer:
        if (seen.filename or "").endswith("flaky.wav"):
            with self._lock:
                self.requests.append(seen)
            return 503, {"error": "overloaded"}
        return super()._answer(seen)


def _traffic(env: dict[str, str], work: Path) -> dict[str, str]:
    note = work / "voice-note.wav"
    note.write_bytes(audio.wav(1.0))
    presigned_key, presign_trace = _presigned_upload(env, note)
    uploaded = _cli_upload(env, note, "5")
    # Its transcription fails with 503 until retries run out: a dead letter.
    flaky = work / "flaky.wav"
    flaky.write_bytes(audio.wav(0.5))
    failed = _cli_upload(env, flaky, "8")
    scratch = work / "scratch.txt"
    scratch.write_text("expires in a second\n")
    expired = _cli_upload(env, scratch, "9", "--bucket", env["MINIO_BUCKET_NAME"])
    return {
        "presigned_key": presigned_key,
        "presign_trace_id": presign_trace,
        "uploaded_key": uploaded["key"],
        "upload_trace_id": trace_id_of(uploaded["metadata"]["traceparent"]),
        "dead_lettered_key": failed["key"],
        "expired_key": expired["key"],
    }


@pytest.fixture(scope="session")
def observed(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    if stack.control is None:
        message = f"traces and metrics need the local stack, not {stack.origin} endpoints"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    state = stack.control.observe()
    work = tmp_path_factory.mktemp("observed")
    artifacts = ARTIFACTS / "observability"
    artifacts.mkdir(parents=True, exist_ok=True)
    with _Overloaded() as api:
        env, audio_bucket = _environment(stack, work, api.base_url)
        consumer = _start_consumer(env, artifacts / "consumer.log")
        try:
            yield Observed(
                env=env,
                zipkin_url=f"http://127.0.0.1:{state.zipkin_port}",
                prometheus_url=f"http://127.0.0.1:{state.prometheus_port}",
                consoles_url=f"http://127.0.0.1:{state.prometheus_port}/consoles/voxpersona.html",
                audio_bucket=audio_bucket,
                artifacts=artifacts,
                **_traffic(env, work),
            )
        finally:
            consumer.send_signal(signal.SIGTERM)
            try:
                consumer.wait(timeout=40)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()
