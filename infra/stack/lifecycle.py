"""One local stack under a state directory: ``up``, ``down``, ``stop_server``,
``start_server``, ``status``, ``env``. The servers come from the registry ``SERVERS`` (in
start order); nothing here knows what a server is beyond its ``Server`` operations."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from infra.stack.common import READY_TIMEOUT_S, StackError, say
from infra.stack.kafka import DEFAULT_DLQ_TOPIC, DEFAULT_EVENTS_TOPIC, Kafka
from infra.stack.minio import Minio
from infra.stack.postgres import Postgres
from infra.stack.process import Children, pid_belongs_to, stop_process_group, wait_for
from infra.stack.prometheus import CONSOLE_NAME, Prometheus
from infra.stack.server import Context, Server, Topics
from infra.stack.state import (
    Credentials,
    StackState,
    default_state_dir,
    free_port,
    load_credentials,
    load_state,
    port_is_free,
    save_state,
)
from infra.stack.zipkin import Zipkin

# Start order; ``down`` stops them in reverse (MinIO first, so it does not queue events
# for a dying Kafka), and ``status`` and ``env`` list them in reverse.
SERVERS: tuple[Server, ...] = (Postgres(), Kafka(), Minio())
SERVER_NAMES = tuple(server.name for server in SERVERS)
# Optional, started by ``up --observed`` (or ``observe()`` on a running stack): traces and
# metrics for a person to look at. Not part of the default stack: they cost start time
# and memory that `make run` and most tests do not need.
OBSERVERS: tuple[Server, ...] = (Zipkin(), Prometheus())
_BY_NAME = {server.name: server for server in (*SERVERS, *OBSERVERS)}


def server_named(name: str) -> Server:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise StackError(f"unknown server {name!r}: one of {', '.join(SERVER_NAMES)}") from None


class Stack:
    """One local stack under ``state_dir``: ``up()``, ``down()``, ``env()``, ``status()``."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        events_topic: str = DEFAULT_EVENTS_TOPIC,
        dlq_topic: str = DEFAULT_DLQ_TOPIC,
        events_partitions: int = 4,
        throwaway: bool = False,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.events_partitions = events_partitions
        # True only for a stack whose state dir is deleted after use (the test fixtures):
        # PostgreSQL then runs without fsync (see infra/stack/postgres.py).
        self.throwaway = throwaway
        self.logs = self.state_dir / "logs"
        self._children = Children()

    # --- persisted files -----------------------------------------------------------------

    def load_state(self) -> StackState | None:
        return load_state(self.state_dir)

    def _save_state(self, state: StackState) -> None:
        save_state(self.state_dir, state)

    def credentials(self) -> Credentials:
        """The stack's credentials, generated on first use and kept (0600) with its data."""
        return load_credentials(self.state_dir)

    def _context(self, state: StackState) -> Context:
        def spawn(name: str, cmd: list[str], env: dict[str, str], **popen: object) -> None:
            pid = self._children.spawn(cmd, env, self.logs / f"{name}.log", **popen)
            state.pids[name] = pid
            self._save_state(state)

        return Context(
            self.state_dir,
            state,
            self.credentials(),
            Topics(self.events_topic, self.dlq_topic, self.events_partitions),
            spawn,
            throwaway=self.throwaway,
        )

    # --- processes ----------------------------------------------------------------------

    def running_pids(self) -> dict[str, int]:
        self._children.reap()
        state = self.load_state()
        if state is None:
            return {}
        return {name: pid for name, pid in state.pids.items() if self._is_ours_and_alive(pid)}

    def _is_ours_and_alive(self, pid: int) -> bool:
        if not self._children.is_alive(pid):
            return False
        # A child of this object is ours for sure (and a dying one has an empty cmdline);
        # any other pid must prove it by naming our state dir (pids get reused).
        return pid in self._children or pid_belongs_to(pid, self.state_dir)

    # --- lifecycle ----------------------------------------------------------------------

    def up(self) -> StackState:
        """Install (cached), start and wait for MinIO, Kafka and PostgreSQL.

        Idempotent: a stack that is already up and ready is left alone. Raises StackError;
        on any failure or Ctrl-C, whatever this call started is stopped again.
        """
        previous = self.load_state()
        if (
            previous is not None
            and has_every_port(previous)
            and set(SERVER_NAMES) <= set(self.running_pids())
        ):
            with contextlib.suppress(StackError):
                self._wait_ready(self._context(previous), timeout_s=10.0)
                say(f"already up ({self.state_dir})")
                return previous
        self.down(quiet=True)  # stale state from a killed run: stop leftovers by pid

        installed = {server.name: server.install() for server in reversed(SERVERS)}
        state = self._choose_ports(previous)
        self._save_state(state)
        ctx = self._context(state)
        try:
            for server in SERVERS:
                server.start(ctx, installed[server.name])
                if server.others_wait:
                    self._wait_one(server, ctx, READY_TIMEOUT_S)
                    server.after_ready(ctx)
            self._wait_ready(ctx, READY_TIMEOUT_S)
        except BaseException:
            self.down(quiet=True)
            raise
        say(
            f"up: MinIO 127.0.0.1:{state.minio_port}, Kafka 127.0.0.1:{state.kafka_port}, "
            f"PostgreSQL 127.0.0.1:{state.postgres_port} (state: {self.state_dir})"
        )
        return state

    def down(self, *, quiet: bool = False) -> list[str]:
        """Stop every process this stack started (by pid: SIGTERM, then SIGKILL)."""
        state = self.load_state()
        if state is None:
            return []
        stopped = []
        for server in (*reversed(OBSERVERS), *reversed(SERVERS)):
            if self._stop_one(state, server.name):
                stopped.append(server.name)
                if not quiet:
                    say(f"stopped {server.name}")
        state.pids = {}
        self._save_state(state)
        self._children.reap()
        return stopped

    def observe(self) -> StackState:
        """Start Zipkin and Prometheus beside a running stack (idempotent) and wait until
        they are ready. Raises StackError; on failure they are stopped again."""
        state = self._running_state()
        running = self.running_pids()
        missing = [server for server in OBSERVERS if server.name not in running]
        if not missing:
            return state
        installed = {server.name: server.install() for server in missing}
        for server in missing:
            for name in server.ports:
                if not port_is_free(getattr(state, name)):
                    setattr(state, name, free_port())
        self._save_state(state)
        ctx = self._context(state)
        try:
            for server in missing:
                server.start(ctx, installed[server.name])
            for server in missing:
                self._wait_one(server, ctx, READY_TIMEOUT_S)
        except BaseException:
            for server in missing:
                self._stop_one(state, server.name)
            self._save_state(state)
            raise
        for line in where_to_look(state):
            say(line)
        return state

    def stop_server(self, name: str) -> bool:
        """Stop one server of a running stack (the others keep running); False if it was
        not running. For fault drills and tests: ``start_server`` brings it back."""
        state = self._running_state()
        stopped = self._stop_one(state, server_named(name).name)
        self._save_state(state)
        if stopped:
            say(f"stopped {name}")
        return stopped

    def start_server(self, name: str) -> None:
        """Start one stopped server again on its old port and data, and wait until it is
        ready. A server that is already running is left alone."""
        state = self._running_state()
        server = server_named(name)
        if name in self.running_pids():
            return
        ctx = self._context(state)
        server.start(ctx, server.install())
        self._wait_one(server, ctx, READY_TIMEOUT_S)
        say(f"started {name}")

    def _running_state(self) -> StackState:
        state = self.load_state()
        if state is None or not state.pids:
            raise StackError(f"no stack runs in {self.state_dir}: run `up` first")
        return state

    def _stop_one(self, state: StackState, name: str) -> bool:
        """Stop ``name``'s process group if it is ours and alive; drop its pid either way."""
        pid = state.pids.pop(name, None)
        if pid is None or not self._is_ours_and_alive(pid):
            return False
        stop_process_group(pid, server_named(name).stop_signal)
        self._children.stopped(pid)
        return True

    def status(self) -> dict[str, str]:
        state = self.load_state()
        running = self.running_pids()
        result = {}
        for server in reversed(SERVERS):
            if state is None or server.name not in running:
                result[server.name] = "stopped"
            else:
                result[server.name] = f"running (pid {running[server.name]})"
        for server in OBSERVERS:  # optional: listed only while they run
            if server.name in running:
                result[server.name] = f"running (pid {running[server.name]})"
        return result

    def env(self) -> dict[str, str]:
        """Endpoints and credentials in the settings contract's names."""
        state = self.load_state()
        if state is None:
            raise StackError(f"no stack in {self.state_dir}: run `python -m infra.stack up` first")
        ctx = self._context(state)
        running = self.running_pids()
        values: dict[str, str] = {}
        for server in reversed(SERVERS):
            values.update(server.env(ctx))
        for server in OBSERVERS:
            if server.name in running:
                values.update(server.env(ctx))
        return values

    def observed(self) -> bool:
        """True when Zipkin and Prometheus run beside the stack."""
        return all(server.name in self.running_pids() for server in OBSERVERS)

    # --- internals ----------------------------------------------------------------------

    def _choose_ports(self, previous: StackState | None) -> StackState:
        """Keep the previous ports when free, else pick new free ones. A server whose data
        holds one of its ports (Kafka's controller address is stored in its metadata log
        at format time) starts with fresh data when that port changes."""
        state = StackState()
        for server in SERVERS:
            for name in (*server.ports, *server.data_ports):
                old = getattr(previous, name, 0) if previous else 0
                if port_is_free(old):
                    setattr(state, name, old)
                    continue
                setattr(state, name, free_port())
                if name in server.data_ports:
                    shutil.rmtree(self.state_dir / server.name, ignore_errors=True)
        return state

    def _wait_ready(self, ctx: Context, timeout_s: float) -> None:
        for server in SERVERS:
            self._wait_one(server, ctx, timeout_s)

    def _wait_one(self, server: Server, ctx: Context, timeout_s: float) -> None:
        wait_for(
            server.name,
            lambda: server.ready(ctx),
            timeout_s,
            self.logs / f"{server.name}.log",
            lambda: server.name in self.running_pids(),
        )


def where_to_look(state: StackState) -> list[str]:
    """Where a person finds the observers' traces, metrics, alerts and dashboard. Pure."""
    prometheus = f"http://127.0.0.1:{state.prometheus_port}"
    return [
        f"traces:    http://127.0.0.1:{state.zipkin_port}/zipkin/",
        f"metrics:   {prometheus}/graph",
        f"alerts:    {prometheus}/alerts",
        f"dashboard: {prometheus}/consoles/{CONSOLE_NAME}",
        f"consumer /metrics: http://127.0.0.1:{state.consumer_metrics_port}/metrics",
    ]


def has_every_port(state: StackState) -> bool:
    """False for a state from an older version that had fewer listeners: restart it."""
    names = [name for server in SERVERS for name in (*server.ports, *server.data_ports)]
    return all(getattr(state, name, 0) for name in names)
