"""``python -m consumer <verb>``: the command line.

Exit codes: 0 ok, 2 bad usage or bad input (one line on stderr, no traceback), 1 a failure
at run time. Every verb that prints data takes ``--json`` and then prints one JSON object
per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pydantic import ValidationError

from consumer.errors import ConfigError, ConsumerError, InvalidInput
from consumer.logs import configure_logging
from consumer.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m consumer", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(
        dest="verb", required=True, metavar="VERB", parser_class=_OneLineParser
    )
    setup = verbs.add_parser("setup", help="create buckets, notifications and topics (idempotent)")
    setup.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _settings_or_exit() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        field = Settings.model_fields.get(name)
        env_name = field.alias if field is not None and field.alias else name
        raise ConfigError(f"invalid setting {env_name}: {first['msg']}") from None


def _cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.provisioning import Action, run_setup

    changes = asyncio.run(run_setup(settings))
    for change in changes:
        if args.json:
            print(
                json.dumps(
                    {
                        "resource": change.resource,
                        "name": change.name,
                        "action": str(change.action),
                        "detail": change.detail,
                    }
                )
            )
        else:
            detail = f" ({change.detail})" if change.detail else ""
            print(f"{change.action:<9} {change.resource:<12} {change.name}{detail}")
    if not args.json and all(c.action is Action.UNCHANGED for c in changes):
        print("setup: nothing to change, everything is in place")
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "setup": _cmd_setup,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m consumer``; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    try:
        settings = _settings_or_exit()
        configure_logging(settings.log_level)
        return _COMMANDS[args.verb](args, settings)
    except (ConfigError, InvalidInput) as exc:
        print(f"consumer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConsumerError as exc:
        print(f"consumer: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("consumer: interrupted", file=sys.stderr)
        return 130
