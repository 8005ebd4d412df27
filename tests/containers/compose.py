"""A ``docker compose`` project of the real docker-compose.yml, for the container tests.

Each project has its own name (so its own network and volumes), credentials generated here
and free host ports; ``down`` removes its containers, network and volumes.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.docker.engine import Engine
from infra.docker.images import Images

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PREFIX = "vpct"
UP_TIMEOUT_S = 420
POLL_INTERVAL_S = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ComposeProject:
    engine: Engine
    images: Images
    files: tuple[str, ...] = ("docker-compose.yml",)
    name: str = field(default_factory=lambda: f"{PROJECT_PREFIX}{uuid.uuid4().hex[:8]}")
    minio_access_key: str = field(default_factory=lambda: "vox" + secrets.token_hex(6))
    minio_secret_key: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)
    postgres_password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "MINIO_PORT",
            "MINIO_CONSOLE_PORT",
            "KAFKA_HOST_PORT",
            "POSTGRES_PORT",
            "CONSUMER_HEALTH_PORT",
            "PROMETHEUS_PORT",
        ):
            self.ports[name] = free_port()

    def env(self) -> dict[str, str]:
        return {
            **self.engine.env(),
            **self.images.compose_env(),
            **{name: str(port) for name, port in self.ports.items()},
            "MINIO_ACCESS_KEY": self.minio_access_key,
            "MINIO_SECRET_KEY": self.minio_secret_key,
            "POSTGRES_PASSWORD": self.postgres_password,
        }

    def run(self, *args: str, timeout_s: float = 120, check: bool = True) -> str:
        """One ``docker compose`` command; on failure the error carries its output."""
        cmd = ["docker", "compose", "-p", self.name, "--project-directory", str(REPO_ROOT)]
        for name in self.files:
            cmd += ["-f", str(REPO_ROOT / name)]
        proc = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{self.logs_tail()}"
            )
        return proc.stdout

    def logs_tail(self) -> str:
        cmd = ["docker", "compose", "-p", self.name, "--project-directory", str(REPO_ROOT)]
        for name in self.files:
            cmd += ["-f", str(REPO_ROOT / name)]
        proc = subprocess.run(
            [*cmd, "logs", "--no-color", "--tail", "25"],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=60,
            check=False,
        )
        return "--- logs ---\n" + proc.stdout[-6000:]

    def up(self, *extra: str) -> None:
        """Up and wait: every service healthy, every one-shot exited 0 (compose --wait)."""
        self.run(
            "up",
            "-d",
            "--wait",
            "--wait-timeout",
            str(UP_TIMEOUT_S),
            *extra,
            timeout_s=UP_TIMEOUT_S + 60,
        )

    def down(self) -> None:
        self.run(
            "--profile",
            "observability",
            "down",
            "-v",
            "--remove-orphans",
            "--timeout",
            "20",
            timeout_s=180,
        )

    def services(self) -> list[dict[str, Any]]:
        """``docker compose ps -a`` rows (one JSON object per line, or one list)."""
        out = self.run("ps", "-a", "--format", "json").strip()
        if out.startswith("["):
            rows: list[dict[str, Any]] = json.loads(out)
            return rows
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def consumer_json(self, *argv: str, index: int = 1) -> list[dict[str, Any]]:
        """A consumer CLI command inside a consumer container; its ``--json`` lines."""
        out = self.run(
            "exec",
            "-T",
            "--index",
            str(index),
            "consumer",
            "python",
            "-m",
            "consumer",
            *argv,
            "--json",
        )
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_done(self, keys: set[str], *, index: int = 1, timeout_s: float = 180) -> set[str]:
        """Until every key is listed with processing status done; returns those seen."""
        deadline = time.monotonic() + timeout_s
        seen: set[str] = set()
        while time.monotonic() < deadline:
            rows = self.consumer_json("ls", "--status", "done", index=index)
            seen = {row["key"] for row in rows} & keys
            if seen == keys:
                return seen
            time.sleep(POLL_INTERVAL_S)
        raise AssertionError(
            f"not done after {timeout_s}s: {sorted(keys - seen)}\n{self.logs_tail()}"
        )

    def wait_healthy(self, service: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = [row for row in self.services() if row["Service"] == service]
            if rows and all(row.get("Health") == "healthy" for row in rows):
                return
            time.sleep(POLL_INTERVAL_S)
        raise AssertionError(f"{service} not healthy after {timeout_s}s\n{self.logs_tail()}")

    def started_finished(self) -> dict[str, tuple[str, str]]:
        """Service -> (State.StartedAt, State.FinishedAt) of its (first) container."""
        rows = {row["Service"]: row["ID"] for row in self.services()}
        proc = subprocess.run(
            ["docker", "inspect", *rows.values()],
            capture_output=True,
            text=True,
            env=self.engine.env(),
            timeout=60,
            check=True,
        )
        by_id = {item["Id"][:12]: item["State"] for item in json.loads(proc.stdout)}
        return {
            service: (by_id[cid[:12]]["StartedAt"], by_id[cid[:12]]["FinishedAt"])
            for service, cid in rows.items()
        }
