"""A Docker engine and ``docker compose`` for the container tests, installed when missing.

The engine listens on a socket of its own (not /var/run/docker.sock), so that nothing else
on the machine (other test sessions, testcontainers' default lookup) starts talking to it by
accident. Whoever starts it stops it again, by pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.stack import StackError, cache_dir

ENGINE_DIR = Path(os.environ.get("VOXPERSONA_DOCKER_DIR", "/run/voxpersona-docker"))
COMPOSE_MODULE = "github.com/docker/compose/v5"
COMPOSE_VERSION = "v5.6.0"
APT_PACKAGES = ("docker.io", "debootstrap")
ENGINE_START_TIMEOUT_S = 90.0
ENGINE_STOP_TIMEOUT_S = 30.0


class DockerError(StackError):
    """The engine, compose or an image could not be had; the message says which and why."""


def say(message: str) -> None:
    print(f"[docker] {message}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    what: str,
    stdin: subprocess.Popen[bytes] | None = None,
) -> str:
    """Run a build step; on failure raise with the tail of its output."""
    source = stdin.stdout if stdin is not None else subprocess.DEVNULL
    proc = subprocess.run(cmd, capture_output=True, env=env, check=False, stdin=source)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        tail = (out + err).strip().splitlines()[-15:]
        raise DockerError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return out


# --------------------------------------------------------------------------------------
# Packages and compose
# --------------------------------------------------------------------------------------


def ensure_packages() -> None:
    """docker.io (dockerd, containerd, runc) and debootstrap from Debian, once."""
    if shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    if os.geteuid() != 0:
        raise DockerError(f"need root to apt-get install {' '.join(APT_PACKAGES)}")
    say(f"installing {' '.join(APT_PACKAGES)} with apt-get (first time only)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env, what="apt-get update")
    run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], env=env, what="apt-get install")


def compose_binary() -> Path:
    return cache_dir() / "compose" / COMPOSE_VERSION / "docker-compose"


def ensure_compose() -> Path:
    """Compose v2+ built from its Go module into the cache, linked as a CLI plugin.

    ``go install module@version`` refuses this module (its go.mod has exclude directives),
    so the downloaded module is copied out of the read-only module cache and built there.
    """
    binary = compose_binary()
    if not binary.is_file():
        _build_compose(binary)
    plugin = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    if not plugin.is_symlink() or plugin.resolve() != binary.resolve():
        plugin.unlink(missing_ok=True)
        plugin.symlink_to(binary)
    return binary


def _go_env() -> dict[str, str]:
    return dict(
        os.environ,
        GOMODCACHE=str(cache_dir() / "gomod"),
        GOCACHE=str(cache_dir() / "gobuild"),
        GOFLAGS="-buildvcs=false",
    )


def _build_compose(binary: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise DockerError("'go' not found on PATH: compose is built from its Go module")
    say(f"building docker compose {COMPOSE_VERSION} from its Go module (first time only)")
    module = f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"
    listing = run([go, "mod", "download", "-json", module], env=_go_env(), what="go download")
    source = Path(_json_field(listing, "Dir"))
    work = binary.parent / "src"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    for path in [work, *work.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    ldflags = f"-s -w -X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}"
    partial = binary.with_suffix(".partial")
    cmd = [go, "build", "-C", str(work), "-trimpath", "-ldflags", ldflags]
    run([*cmd, "-o", str(partial), "./cmd"], env=_go_env(), what="go build compose")
    partial.rename(binary)
    shutil.rmtree(work, ignore_errors=True)


def _json_field(text: str, name: str) -> str:
    import json

    value = json.loads(text).get(name)
    if not isinstance(value, str):
        raise DockerError(f"go mod download gave no {name}: {text[:300]}")
    return value


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """A Docker engine that answers; ``pid`` is set when this process started it."""

    host: str
    pid: int | None

    def env(self) -> dict[str, str]:
        """The environment for docker / compose commands against this engine."""
        return dict(os.environ, DOCKER_HOST=self.host)


def socket_path() -> Path:
    return ENGINE_DIR / "docker.sock"


def answers(path: Path) -> bool:
    """True when the engine on this unix socket answers ``GET /_ping`` with 200."""
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(1024)
    except OSError:
        return False


@contextmanager
def engine() -> Iterator[Engine]:
    """An engine for the duration of the block: the one already on our socket, or one
    started here (and stopped here by its pid)."""
    ensure_packages()
    sock = socket_path()
    if answers(sock):
        yield Engine(f"unix://{sock}", None)
        return
    proc = _start_dockerd(sock)
    try:
        _wait_engine(sock, proc)
        yield Engine(f"unix://{sock}", proc.pid)
    finally:
        _stop_dockerd(proc)


def _start_dockerd(sock: Path) -> subprocess.Popen[bytes]:
    ENGINE_DIR.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    log = (cache_dir() / "logs" / "dockerd.log").open("wb")
    say(f"starting dockerd on {sock} (log: {log.name})")
    cmd = [
        "dockerd",
        f"--host=unix://{sock}",
        f"--pidfile={ENGINE_DIR / 'dockerd.pid'}",
        f"--exec-root={ENGINE_DIR / 'exec'}",
        "--log-level=warn",
    ]
    with log:
        # Its own session: a Ctrl-C of the test run reaches us, and we stop it in order.
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_engine(sock: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DockerError(f"dockerd exited ({proc.returncode}): {_log_tail()}")
        if answers(sock):
            return
        time.sleep(0.5)
    _stop_dockerd(proc)
    raise DockerError(f"dockerd did not answer in {ENGINE_START_TIMEOUT_S:.0f}s: {_log_tail()}")


def _stop_dockerd(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    say(f"stopping dockerd (pid {proc.pid})")
    proc.terminate()
    try:
        proc.wait(timeout=ENGINE_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _log_tail() -> str:
    path = cache_dir() / "logs" / "dockerd.log"
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-8:])
    except OSError:
        return "(no log)"
