"""A second, private MinIO server for the load test's ``--delivery direct`` pass.

The stack's MinIO keeps a persistent event queue (``queue_dir``): an event is written to
disk before the PUT is answered and a background loop sends the queue to Kafka. That loop
lists the queue every 3 seconds (``retryInterval`` in MinIO's internal/store/store.go), so
an event waits 0–3 s before Kafka sees it. To measure the consumer apart from that wait,
this server has the same Kafka target *without* ``queue_dir``: with
``MINIO_API_SYNC_EVENTS=on`` it sends each event to Kafka before answering the PUT (and
would lose events while Kafka is down, which is why the stack does not run this way).

Same pinned binary, same credentials and Kafka topic as the stack; its own data directory
and free ports on 127.0.0.1; stopped by its pid. With ``queue_limit`` it keeps a
``queue_dir`` of that many events at most, as the stack does with 100,000 (the fault suite
fills it to make MinIO drop events).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Final

from infra.stack import NOTIFY_TARGET_ID, ensure_minio_binary, free_port

READY_TIMEOUT_S: Final = 60.0


class PrivateMinio:
    def __init__(
        self,
        values: dict[str, str],
        topic: str,
        *,
        queue_limit: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._values = values
        self._topic = topic
        self._queue_limit = queue_limit
        self._env = env or {}  # more of the server's settings
        self._dir = Path(tempfile.mkdtemp(prefix="bench-minio-"))
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def queue_dir(self) -> Path | None:
        """Where it queues events for Kafka (None: it keeps no queue)."""
        return self._dir / "queue" if self._queue_limit is not None else None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        target = NOTIFY_TARGET_ID
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MINIO_")},
            "MINIO_ROOT_USER": self._values["MINIO_ACCESS_KEY"],
            "MINIO_ROOT_PASSWORD": self._values["MINIO_SECRET_KEY"],
            "MINIO_API_SYNC_EVENTS": "on",
            "MINIO_UPDATE": "off",
            f"MINIO_NOTIFY_KAFKA_ENABLE_{target}": "on",
            f"MINIO_NOTIFY_KAFKA_BROKERS_{target}": self._values["KAFKA_BOOTSTRAP_SERVERS"],
            f"MINIO_NOTIFY_KAFKA_TOPIC_{target}": self._topic,
        }
        if self.queue_dir is not None:
            self.queue_dir.mkdir(parents=True, exist_ok=True)
            env[f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{target}"] = str(self.queue_dir)
            env[f"MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_{target}"] = str(self._queue_limit)
        env.update(self._env)
        command = [
            str(ensure_minio_binary()),
            "server",
            str(self._dir / "data"),
            "--address",
            self.endpoint,
            "--console-address",
            f"127.0.0.1:{free_port()}",
            "--quiet",
        ]
        with (self._dir / "minio.log").open("wb") as log:  # the child keeps its own handle
            self._proc = subprocess.Popen(  # noqa: S603 - the pinned MinIO binary
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        queue = "no queue_dir" if self.queue_dir is None else f"queue_limit {self._queue_limit}"
        print(f"private MinIO ({queue}) pid {self.pid} on {self.endpoint}", flush=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"http://{self.endpoint}/minio/health/ready"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        tail = (self._dir / "minio.log").read_text(errors="replace")[-1500:]
        self.stop()
        raise RuntimeError(f"the private MinIO did not become ready:\n{tail}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
