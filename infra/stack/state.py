"""The state directory of one stack: which ports and pids ``up`` chose (state.json), the
generated credentials (credentials.json, 0600), free ports. Data and logs of the servers
live beside these files."""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infra.stack.common import REPO_ROOT

STATE_FILE = "state.json"
CREDENTIALS_FILE = "credentials.json"


def default_state_dir() -> Path:
    return Path(os.environ.get("VOXPERSONA_STACK_DIR", str(REPO_ROOT / ".stack")))


@dataclass
class StackState:
    """What one ``up`` started: persisted to state.json so ``down`` and ``env`` can find it."""

    minio_port: int = 0
    minio_console_port: int = 0
    kafka_port: int = 0
    kafka_controller_port: int = 0
    # Further listeners of the same broker, to prove the consumer's Kafka security (MinIO
    # and everything else use the PLAINTEXT one): SASL_PLAINTEXT with PLAIN; SSL (TLS with
    # a certificate of the stack's test CA); SASL_SSL with SCRAM-SHA-512.
    kafka_sasl_port: int = 0
    kafka_ssl_port: int = 0
    kafka_scram_port: int = 0
    postgres_port: int = 0
    # The optional observers (``up --observed``): Zipkin, Prometheus, and the port the
    # consumer serves /metrics on for that Prometheus (the env's HEALTH_PORT).
    zipkin_port: int = 0
    prometheus_port: int = 0
    consumer_metrics_port: int = 0
    # A PLAINTEXT listener for network-fault drills: the broker binds the first port and
    # advertises the second, where a fault proxy (Toxiproxy) listens and forwards to the
    # first, so every connection of a client bootstrapped there passes the proxy.
    kafka_faults_port: int = 0
    kafka_faults_proxy_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    """Generated once per state directory; never printed except by ``env``."""

    minio_access_key: str
    minio_secret_key: str
    postgres_password: str
    # One Kafka user: PLAIN on the SASL_PLAINTEXT listener, SCRAM-SHA-512 (the same
    # password, stored in the KRaft metadata at format time) on the SASL_SSL one.
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


def load_state(state_dir: Path) -> StackState | None:
    try:
        raw = json.loads((state_dir / STATE_FILE).read_text())
        return StackState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def save_state(state_dir: Path, state: StackState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def load_credentials(state_dir: Path) -> Credentials:
    """The stack's credentials, generated on first use and kept (0600) with its data.
    A file from an older version keeps its values; missing ones are generated."""
    path = state_dir / CREDENTIALS_FILE
    try:
        stored = json.loads(path.read_text())
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
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(creds), handle)
    return creds


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
