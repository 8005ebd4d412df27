"""``python -m consumer <verb>``: the command line.

Exit codes are ``ExitCode`` (exit_codes.py): 0 ok, 2 bad usage or bad input (one line on
stderr, no traceback), 1 a failure at run time, 130 interrupted. Every verb that prints
data takes ``--json`` and then prints one JSON object per line.

The verbs live by group: service_verbs.py (setup, run, status, reconcile, replay,
retention), index_verbs.py (ls, search, usage), history_verb.py (history), client_verbs.py
(upload, presign, delete, import, download, stat, cat, result); common.py is what they
share. Each verb's parser names its handler (``set_defaults(handler=…)``), so adding a
verb touches one module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from consumer.cli.client_verbs import add_client_verbs
from consumer.cli.common import PROG, Handler, OneLineParser, load_settings, version
from consumer.cli.exit_codes import ExitCode
from consumer.cli.history_verb import add_history_verb
from consumer.cli.index_verbs import add_index_verbs, parse_criteria
from consumer.cli.progress import screen_of
from consumer.cli.service_verbs import add_service_verbs
from consumer.errors import ConfigError, ConsumerError, InvalidInput, SweepBlocked
from consumer.logs import configure_logging

__all__ = ["ExitCode", "SweepBlocked", "build_parser", "main", "parse_criteria"]

# HTTP clients log each request at INFO ("HTTP Request: GET …"); above a table that is
# noise even when LOG_LEVEL=info asks for the consumer's own INFO lines.
_CHATTY_LIBRARIES = ("httpx", "httpcore")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="VoxPersona consumer: the command line.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    verbs = parser.add_subparsers(
        dest="verb", required=True, metavar="VERB", parser_class=OneLineParser
    )
    add_service_verbs(verbs)
    add_index_verbs(verbs)
    add_history_verb(verbs)
    add_client_verbs(verbs)
    return parser


def _configure_logs(verb: str, level: str, explicit: bool, secrets: tuple[str, ...]) -> None:
    """A CLI verb's own output is the point: INFO chatter (HTTP requests, connections)
    would cut into bars and tables, so verbs log warnings unless LOG_LEVEL says otherwise
    (``run`` keeps LOG_LEVEL's default). Log lines go through the screen, above a bar."""
    configure_logging(level if explicit or verb == "run" else "warning", secrets=secrets)
    if verb == "run":
        return
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    screen = screen_of()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is screen.stream:
            handler.setStream(screen)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m consumer``; returns the process exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader left (`ls | head`, `cat B/K | head -c 100`): nothing is wrong. Point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except InvalidInput as exc:  # raised by a type function
        print(f"{PROG}: error: {exc} (see --help)", file=sys.stderr)
        return ExitCode.USAGE
    handler: Handler = args.handler
    try:
        settings = load_settings()
        _configure_logs(
            args.verb,
            settings.log_level,
            "log_level" in settings.model_fields_set,
            settings.secret_values,
        )
        return handler(args, settings)
    except (ConfigError, InvalidInput) as exc:
        screen_of().clear()
        print(f"consumer: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except ConsumerError as exc:
        screen_of().keep()
        print(f"consumer: failed: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        # A progress bar may own the line: end it where it stopped, then say so.
        screen_of().keep()
        print("consumer: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
