"""The common shape of the stack's servers: each server module (minio, kafka, postgres)
exposes one object with these operations, and the stack drives them through a registry
instead of branching on names."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from infra.stack.state import Credentials, StackState


@dataclass(frozen=True)
class Topics:
    """The topics the stack creates before MinIO publishes to them."""

    events: str
    dlq: str
    events_partitions: int


class Spawn(Protocol):
    def __call__(self, name: str, cmd: list[str], env: dict[str, str], **popen: object) -> None:
        """Start ``name``'s server process (its log: ``logs/<name>.log``) and record its pid."""


@dataclass(frozen=True)
class Context:
    """What a server needs from the stack it belongs to."""

    state_dir: Path
    state: StackState
    credentials: Credentials
    topics: Topics
    spawn: Spawn
    # A stack whose data is deleted after use (the test fixtures'): servers may trade
    # durability against a crash of the machine for speed. Never for `make run`'s stack.
    throwaway: bool = False

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"


class Server(Protocol):
    """One server of the stack."""

    @property
    def name(self) -> str:
        """Its name in the CLI, in state.json's pids and in logs/<name>.log."""

    @property
    def ports(self) -> tuple[str, ...]:
        """The StackState fields it listens on."""

    @property
    def data_ports(self) -> tuple[str, ...]:
        """StackState fields written into its data when the data is made: a new port
        there means the data must be made again."""

    @property
    def others_wait(self) -> bool:
        """Servers started after this one need it ready (MinIO checks its Kafka target)."""

    @property
    def stop_signal(self) -> signal.Signals:
        """The signal that stops it cleanly without waiting for its clients to leave."""

    def install(self) -> Path:
        """The installed server (binary, jars or bin dir), from the cache; built or
        downloaded the first time."""

    def start(self, ctx: Context, installed: Path) -> None:
        """Prepare its data (first time) and spawn it; returns without waiting."""

    def ready(self, ctx: Context) -> bool:
        """One real readiness probe (not only an open port)."""

    def after_ready(self, ctx: Context) -> None:
        """What ``up`` does once it is ready, before the next server starts."""

    def env(self, ctx: Context) -> dict[str, str]:
        """Its endpoints and credentials in the settings' names."""
