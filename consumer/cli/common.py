"""What every verb group shares: the one-line parser, argument types, settings, the index
and client plumbing, Ctrl-C, tracing of the verbs that do work."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import functools
import importlib.metadata
import json
import re
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

from consumer.cli.exit_codes import ExitCode
from consumer.cli.output import for_terminal, table
from consumer.client.api import VoxClient
from consumer.durations import parse_duration
from consumer.errors import ConfigError, InvalidInput
from consumer.index import IndexStore, Versions, open_index, sqlite_path
from consumer.names import check_bucket, check_key
from consumer.settings import Settings
from consumer.telemetry import (
    CLI_SERVICE_NAME,
    configure_telemetry,
    flush_telemetry,
    record_error,
    tracer,
)

T = TypeVar("T")

Handler = Callable[[argparse.Namespace, Settings], int]
"""A verb: the parsed arguments and the settings in, an ExitCode out."""

PROG = "python -m consumer"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of the usage block, takes
    no abbreviated options (``--buck`` is not ``--bucket``) and suggests the nearest verb,
    option or choice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        # A subparser says it here, where it knows its own options (the top-level
        # parser would only report them, without a suggestion).
        unknown = [arg for arg in extras if arg.startswith("-")]
        if unknown:
            options = [o for o in self._option_string_actions if o.startswith("--")]
            self.error(
                f"unrecognized arguments: {' '.join(extras)}{option_suggestion(unknown, options)}"
            )
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        # `--verison` alone is reported as a missing VERB: the hint names the option.
        hint = suggestion(message) or ("" if "did you mean" in message else self._option_hint())
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}{hint} (see --help)\n")

    def _option_hint(self) -> str:
        known = [o for o in self._option_string_actions if o.startswith("--")]
        unknown = [
            arg
            for arg in getattr(self, "_given", [])
            if arg.startswith("--") and arg.partition("=")[0] not in self._option_string_actions
        ]
        return option_suggestion(unknown, known)


def suggestion(message: str) -> str:
    """`` (did you mean 'ls'?)`` for argparse's invalid-choice message, else ``""``."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found is None:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def option_suggestion(unknown: Sequence[str], options: Sequence[str]) -> str:
    """`` (did you mean '--bucket'?)`` for the first unknown option near a known one."""
    for arg in unknown:
        close = difflib.get_close_matches(arg.partition("=")[0], options, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return ""


def version() -> str:
    try:
        return importlib.metadata.version("voxpersona-consumer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- tracing ---------------------------------------------------------------------------


def traced(verb: str, *, object_roots: bool = False) -> Callable[[Handler], Handler]:
    """A verb that does work, traced like ``run``: tracing set up from the standard
    ``OTEL_*`` variables, the verb inside one span named ``verb``, and every span exported
    before the process exits (a CLI ends before the batch processor's next export).

    ``object_roots``: no span for the verb itself, so each object's upload span is the root
    of that object's trace (the traceparent the consumer's indexing and processing join).
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def traced_handler(args: argparse.Namespace, settings: Settings) -> int:
            configure_telemetry(with_metrics=False, service_name=CLI_SERVICE_NAME)
            try:
                if object_roots:
                    return handler(args, settings)
                return _in_verb_span(verb, handler, args, settings)
            finally:
                flush_telemetry()

        return traced_handler

    return decorate


def _in_verb_span(verb: str, handler: Handler, args: argparse.Namespace, settings: Settings) -> int:
    # The error is recorded scrubbed (record_error), not by the SDK with the raw message.
    with tracer.start_as_current_span(
        verb,
        attributes={"voxpersona.cli.verb": verb},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            code = handler(args, settings)
        except BaseException as exc:
            record_error(span, exc)
            raise
        span.set_attribute("process.exit.code", code)
        return code


# --- argument types (errors become one line through OneLineParser.error) -----------------


def bucket_name(text: str) -> str:
    try:
        return check_bucket(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_json(parser: argparse.ArgumentParser, what: str = "one JSON object per line") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def add_display(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``--quiet``, for scripts."""
    parser.add_argument("--no-progress", action="store_true", help="draw no progress on stderr")
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress and no summaries on stderr (errors only)",
    )


def shows_progress(args: argparse.Namespace) -> bool:
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def note(args: argparse.Namespace, text: str) -> None:
    """A summary or notice on stderr, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def add_all_versions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all-versions",
        action="store_true",
        help="every stored version and delete marker (like ListObjectVersions)",
    )


def versions(args: argparse.Namespace) -> Versions:
    return Versions.ALL if args.all_versions else Versions.CURRENT


def split_bucket_key(target: str, bucket: str | None) -> tuple[str, str]:
    """``KEY`` with ``--bucket B``, or ``BUCKET/KEY`` without it."""
    if bucket:
        return check_bucket(bucket), check_key(target)
    name, sep, key = target.partition("/")
    if not sep or not name or not key:
        raise InvalidInput(f"{target!r}: give BUCKET/KEY, or KEY with --bucket")
    return check_bucket(name), check_key(key)


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    sizes: Sequence[str] = (),
    times: Sequence[str] = (),
    drop: Sequence[str] = (),
    cut: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> None:
    """A table on stdout. On a terminal it is made for a person: ``sizes`` in KiB/MiB,
    ``times`` to the minute, shorter ``labels``, and it fits the width (``drop`` columns
    left out first, then ``cut`` ones cut). Elsewhere (a pipe, a file) every value in full."""
    if sys.stdout.isatty():
        shown = [for_terminal(row, sizes=sizes, times=times) for row in rows]
        width = shutil.get_terminal_size().columns
        text = table(shown, columns, width=width, drop=drop, cut=cut, labels=labels)
    else:
        text = table(rows, columns)
    sys.stdout.write(text)


def emit(row: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (a reader sees each file as it is done)."""
    print(json.dumps(row, ensure_ascii=False), flush=True)


# --- settings and the index --------------------------------------------------------------


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        field = Settings.model_fields.get(name)
        env_name = field.alias if field is not None and field.alias else name
        raise ConfigError(f"invalid setting {env_name}: {first['msg']}") from None


async def with_index(
    settings: Settings, query: Callable[[IndexStore], Awaitable[T]], *, create: bool = True
) -> T:
    """Run ``query`` on the index; ``create=False`` (read-only verbs) refuses an SQLite
    index that does not exist yet instead of creating an empty one."""
    if not create:
        require_index(settings.index_url)
    async with open_index(
        settings.index_url, command_timeout_s=settings.index_command_timeout_s
    ) as store:
        return await query(store)


def require_index(url: str) -> None:
    """Raise ConfigError naming the file when an SQLite INDEX_URL names no file."""
    if url.startswith(("postgresql://", "postgres://", "postgresql+")):
        return
    path = sqlite_path(url)
    if not path.is_file():
        raise ConfigError(
            f"no index at {path.resolve()} (INDEX_URL={url}): `{PROG} run`"
            " creates it, or set INDEX_URL to the existing one"
        )


def fetch_limited(
    settings: Settings, limit: int, query: Callable[[IndexStore, int], Awaitable[list[T]]]
) -> list[T]:
    """``limit`` rows of a read-only query; one more is asked for, to say on stderr when
    the listing was cut short."""
    rows = asyncio.run(with_index(settings, lambda store: query(store, limit + 1), create=False))
    if len(rows) > limit:
        print(
            f"consumer: showing the first {limit} rows; there are more (raise --limit)",
            file=sys.stderr,
        )
    return rows[:limit]


# --- the client, interruptible -----------------------------------------------------------


async def interruptible(work: Awaitable[T]) -> T:
    """``work``, cancelled by Ctrl-C (then KeyboardInterrupt) however busy the threads are.

    asyncio.run's own SIGINT handler is a plain Python handler: when the kernel hands the
    signal to a worker thread (an upload's), the main thread sleeps on in its selector and
    only notices once the upload has finished. ``add_signal_handler`` wakes the loop through
    its self-pipe, whichever thread received the signal."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await task
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def client_call(settings: Settings, call: Callable[[VoxClient], Awaitable[T]]) -> T:
    async with VoxClient(settings) as client:
        return await interruptible(call(client))


def with_client(settings: Settings, call: Callable[[VoxClient], Awaitable[int]]) -> int:
    return asyncio.run(client_call(settings, call))
