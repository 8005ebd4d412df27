"""``python -m infra.stack up | down | status | env | install | stop | start``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from infra.stack.common import StackError, say
from infra.stack.lifecycle import SERVER_NAMES, SERVERS, Stack

DESCRIPTION = (
    "Bring up the real stack — MinIO, Apache Kafka (KRaft) and PostgreSQL — as local processes."
)


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    try:
        yield
    except StackError as exc:
        say(f"error: {exc}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        raise SystemExit(130) from None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=DESCRIPTION)
    parser.add_argument("verb", choices=["up", "down", "status", "env", "install", "stop", "start"])
    parser.add_argument(
        "server", nargs="?", choices=SERVER_NAMES, help="stop/start: the one server to act on"
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


def _install(stack: Stack) -> None:
    for server in reversed(SERVERS):
        server.install()


def _up(stack: Stack) -> None:
    stack.up()


def _down(stack: Stack) -> None:
    if not stack.down():
        say("nothing was running")


def _env(stack: Stack, *, export: bool) -> None:
    prefix = "export " if export else ""
    for key, value in stack.env().items():
        print(f"{prefix}{key}={value}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stack = Stack(args.state_dir)
    with _clean_errors():
        if args.verb == "status":
            return _print_status(stack)
        if args.verb == "stop":
            if not stack.stop_server(args.server):
                say(f"{args.server} was not running")
        elif args.verb == "start":
            stack.start_server(args.server)
        elif args.verb == "env":
            _env(stack, export=args.export)
        else:
            {"install": _install, "up": _up, "down": _down}[args.verb](stack)
    return 0
