"""``python -m infra.stack up | down | status | env | install | stop | start``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import infra.stack
from infra.stack.common import StackError, say
from infra.stack.lifecycle import (
    OBSERVERS,
    SERVER_NAMES,
    SERVERS,
    Stack,
    where_to_look,
)
from infra.stack.toxiproxy import ensure_toxiproxy_binary


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
    parser = argparse.ArgumentParser(
        prog="python -m infra.stack", description=(infra.stack.__doc__ or "").split("\n")[0]
    )
    parser.add_argument("verb", choices=list(_VERBS))
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
    parser.add_argument(
        "--observed",
        action="store_true",
        help="up: also Zipkin (traces) and Prometheus (metrics, alerts, dashboard)",
    )
    args = parser.parse_args(argv)
    if (args.verb in ("stop", "start")) != (args.server is not None):
        parser.error("a server name goes with stop/start, and only with them")
    return args


def _status(stack: Stack, args: argparse.Namespace) -> int:
    statuses = stack.status()
    for name, status in statuses.items():
        print(f"{name}: {status}")
    return 0 if all(s.startswith("running") for s in statuses.values()) else 1


def _install(stack: Stack, args: argparse.Namespace) -> int:
    for server in reversed(SERVERS):
        server.install()
    if args.observed:
        for server in OBSERVERS:
            server.install()
    # Not a server of the stack, but built the same way: the fault suite's proxy.
    ensure_toxiproxy_binary()
    return 0


def _up(stack: Stack, args: argparse.Namespace) -> int:
    stack.up()
    if args.observed:
        stack.observe()
    return 0


def _down(stack: Stack, args: argparse.Namespace) -> int:
    if not stack.down():
        say("nothing was running")
    return 0


def _stop(stack: Stack, args: argparse.Namespace) -> int:
    if not stack.stop_server(args.server):
        say(f"{args.server} was not running")
    return 0


def _start(stack: Stack, args: argparse.Namespace) -> int:
    stack.start_server(args.server)
    return 0


def _env(stack: Stack, args: argparse.Namespace) -> int:
    prefix = "export " if args.export else ""
    for key, value in stack.env().items():
        print(f"{prefix}{key}={value}")
    state = stack.load_state()
    if state is not None and stack.observed():
        for line in where_to_look(state):
            print(f"# {line}")
    return 0


# In the order of the usage line.
_VERBS: dict[str, Callable[[Stack, argparse.Namespace], int]] = {
    "up": _up,
    "down": _down,
    "status": _status,
    "env": _env,
    "install": _install,
    "stop": _stop,
    "start": _start,
}


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stack = Stack(args.state_dir)
    with _clean_errors():
        return _VERBS[args.verb](stack, args)
    return 1  # not reached: _clean_errors raises SystemExit
