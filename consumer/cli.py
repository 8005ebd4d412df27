"""``python -m consumer <verb>``: the command line.

Exit codes: 0 ok, 2 bad usage or bad input (one line on stderr, no traceback), 1 a failure
at run time. Every verb that prints data takes ``--json`` and then prints one JSON object
per line.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib.metadata
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from pydantic import ValidationError

from consumer.client.commands import COMMANDS as CLIENT_COMMANDS
from consumer.client.commands import add_client_verbs
from consumer.client.result_verb import add_result_verb, cmd_result
from consumer.errors import ConfigError, ConsumerError, InvalidInput
from consumer.index import IndexStore, JobStatus, ObjectRecord, Versions, open_index, sqlite_path
from consumer.logs import configure_logging
from consumer.names import check_bucket
from consumer.output import (
    human_bytes,
    json_lines,
    object_fields,
    status_table,
    table,
    usage_fields,
)
from consumer.service import Role
from consumer.settings import Settings

if TYPE_CHECKING:
    from consumer.retention.decisions import SweepReport
    from consumer.retention.policy import RetentionPolicy

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class SweepBlocked(ConsumerError):
    """The sweeper refused to delete (the index may be stale)."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of the usage block, takes
    no abbreviated options (``--buck`` is not ``--bucket``) and suggests the nearest verb."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{suggestion(message)} (see --help)\n")


def suggestion(message: str) -> str:
    """`` (did you mean 'ls'?)`` for argparse's invalid-choice message, else ``""``."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found is None:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _version() -> str:
    try:
        return importlib.metadata.version("voxpersona-consumer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m consumer", description="VoxPersona consumer: the command line."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verbs = parser.add_subparsers(
        dest="verb", required=True, metavar="VERB", parser_class=_OneLineParser
    )
    setup = verbs.add_parser("setup", help="create buckets, notifications and topics (idempotent)")
    setup.add_argument("--json", action="store_true", help="one JSON object per line")
    setup.add_argument(
        "--identities",
        action="store_true",
        help="also the least-privilege consumer and uploader users and their policies",
    )
    setup.add_argument(
        "--secrets-file",
        type=Path,
        metavar="PATH",
        help="with --identities: where generated secret keys are written (mode 0600)",
    )

    run = verbs.add_parser("run", help="consume events until SIGTERM/SIGINT, then drain")
    run.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.ALL.value,
        help="which role to run (default: all)",
    )
    run.add_argument(
        "--burst",
        action="store_true",
        help="stop once the events topic is drained (for scripts and tests)",
    )

    ls = verbs.add_parser("ls", help="live objects from the index (the latest version of each)")
    ls.add_argument("--bucket", type=_bucket_name, help="only this bucket")
    ls.add_argument("--user", help="only this user's objects")
    ls.add_argument("--prefix", help="only keys starting with this")
    _add_status_filter(ls)
    _add_all_versions(ls)
    ls.add_argument("--limit", type=_positive_int, default=1000, help="at most this many (1000)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")

    search = verbs.add_parser(
        "search", help="live objects whose metadata match KEY=VALUE… and/or transcript --text"
    )
    search.add_argument("criteria", nargs="*", metavar="KEY=VALUE")
    search.add_argument("--text", help="words the transcript must contain (full-text search)")
    search.add_argument("--bucket", type=_bucket_name)
    _add_status_filter(search)
    _add_all_versions(search)
    search.add_argument("--limit", type=_positive_int, default=1000)
    search.add_argument("--json", action="store_true", help="one JSON object per line")

    usage = verbs.add_parser("usage", help="objects and bytes per user or bucket")
    usage.add_argument("--by", choices=["user", "bucket"], default="user")
    usage.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_growth(usage)
    status = verbs.add_parser(
        "status",
        help="health report: connections, MinIO success rate, lag, DLQ (exit 1: unhealthy)",
    )
    status.add_argument("--json", action="store_true", help="the report as one JSON object")
    _add_retention(verbs)
    _add_reconcile_replay(verbs)
    add_client_verbs(verbs)
    add_result_verb(verbs)
    return parser


def _add_growth(usage: argparse.ArgumentParser) -> None:
    usage.add_argument(
        "--growth", action="store_true", help="objects and bytes per UTC day, from the journal"
    )
    usage.add_argument("--days", type=_positive_int, help="with --growth: days back (30)")
    usage.add_argument("--bucket", type=_bucket_name, help="with --growth: only this bucket")
    usage.add_argument("--user", help="with --growth: only this user's objects")


def _add_reconcile_replay(verbs: argparse._SubParsersAction[_OneLineParser]) -> None:
    reconcile = verbs.add_parser(
        "reconcile", help="compare the buckets with the index (missing, stale, extra)"
    )
    reconcile.add_argument(
        "--bucket", type=_bucket_name, help="only this bucket (default: the watched ones)"
    )
    reconcile.add_argument(
        "--repair", action="store_true", help="re-index the differences from MinIO"
    )
    reconcile.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = verbs.add_parser("replay", help="index the events topic again from a moment on")
    replay.add_argument(
        "--since", required=True, metavar="TIME", help="ISO-8601 time, or 30m, 2h, 7d, 1w ago"
    )
    replay.add_argument("--json", action="store_true", help="the summary as one JSON object")


def _add_retention(verbs: argparse._SubParsersAction[_OneLineParser]) -> None:
    retention = verbs.add_parser("retention", help="retention policies: sweep, list, audit")
    actions = retention.add_subparsers(
        dest="retention_verb", required=True, metavar="ACTION", parser_class=_OneLineParser
    )
    sweep = actions.add_parser("sweep", help="one sweeper pass over the sweeper policies")
    sweep.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    sweep.add_argument("--policy", action="append", help="only this policy (repeatable)")
    sweep.add_argument("--json", action="store_true", help="one JSON object per line")
    policies = actions.add_parser("policies", help="the policies and who enforces each")
    policies.add_argument("--json", action="store_true", help="one JSON object per line")
    audit = actions.add_parser("audit", help="deletions from the journal: who and why")
    audit.add_argument("--bucket")
    audit.add_argument("--key")
    audit.add_argument("--limit", type=_positive_int, default=100)
    audit.add_argument("--json", action="store_true", help="one JSON object per line")


def _bucket_name(text: str) -> str:
    try:
        return check_bucket(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_all_versions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all-versions",
        action="store_true",
        help="every stored version and delete marker (like ListObjectVersions)",
    )


def _versions(args: argparse.Namespace) -> Versions:
    return Versions.ALL if args.all_versions else Versions.CURRENT


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def parse_criteria(criteria: Sequence[str]) -> dict[str, str]:
    """``["session-type=interview", …]`` → a metadata filter. Raises InvalidInput."""
    parsed: dict[str, str] = {}
    for item in criteria:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"search criteria must be KEY=VALUE, got {item!r}")
        parsed[name.strip().lower()] = value
    return parsed


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        field = Settings.model_fields.get(name)
        env_name = field.alias if field is not None and field.alias else name
        raise ConfigError(f"invalid setting {env_name}: {first['msg']}") from None


def _cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.identities import IdentityOptions
    from consumer.provisioning import Action, run_setup

    if args.secrets_file is not None and not args.identities:
        raise InvalidInput("--secrets-file is only meaningful with --identities")
    identities = IdentityOptions(secrets_file=args.secrets_file) if args.identities else None
    changes = asyncio.run(run_setup(settings, identities))
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


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.service import run_service

    asyncio.run(run_service(settings, Role(args.role), burst=args.burst))
    return EXIT_OK


def _add_status_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        choices=[status.value for status in JobStatus],
        help="only objects whose processing status is this",
    )


_OBJECT_COLUMNS = (
    "bucket",
    "key",
    "size",
    "content_type",
    "user_id",
    "event_time",
    "processing_status",
    "metadata",
)


_VERSION_COLUMNS = ("version_id", "is_latest", "delete_marker")


def _print_objects(
    records: Sequence[ObjectRecord], as_json: bool, *, all_versions: bool = False
) -> None:
    rows = [object_fields(record) for record in records]
    if as_json:
        sys.stdout.write(json_lines(rows))
        return
    columns = list(_OBJECT_COLUMNS)
    if all_versions:
        columns[2:2] = _VERSION_COLUMNS
    if any(record.snippet is not None for record in records):
        columns.insert(2, "snippet")
    sys.stdout.write(table(rows, columns))


async def _with_index(
    settings: Settings, query: Callable[[IndexStore], Awaitable[T]], *, create: bool = True
) -> T:
    """Run ``query`` on the index; ``create=False`` (read-only verbs) refuses an SQLite
    index that does not exist yet instead of creating an empty one."""
    if not create:
        require_index(settings.index_url)
    async with open_index(settings.index_url) as store:
        return await query(store)


def require_index(url: str) -> None:
    """Raise ConfigError naming the file when an SQLite INDEX_URL names no file."""
    if url.startswith(("postgresql://", "postgres://", "postgresql+")):
        return
    path = sqlite_path(url)
    if not path.is_file():
        raise ConfigError(
            f"no index at {path.resolve()} (INDEX_URL={url}): `python -m consumer run`"
            " creates it, or set INDEX_URL to the existing one"
        )


def _fetch_limited(
    settings: Settings, limit: int, query: Callable[[IndexStore, int], Awaitable[list[T]]]
) -> list[T]:
    """``limit`` rows of a read-only query; one more is asked for, to say on stderr when
    the listing was cut short."""
    rows = asyncio.run(_with_index(settings, lambda store: query(store, limit + 1), create=False))
    if len(rows) > limit:
        print(
            f"consumer: showing the first {limit} rows; there are more (raise --limit)",
            file=sys.stderr,
        )
    return rows[:limit]


def _cmd_ls(args: argparse.Namespace, settings: Settings) -> int:
    records = _fetch_limited(
        settings,
        args.limit,
        lambda store, limit: store.list_objects(
            bucket=args.bucket,
            user_id=args.user,
            prefix=args.prefix,
            processing_status=args.status,
            limit=limit,
            versions=_versions(args),
        ),
    )
    _print_objects(records, args.json, all_versions=args.all_versions)
    return EXIT_OK


def _cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    criteria = parse_criteria(args.criteria)
    if not criteria and args.text is None:
        raise InvalidInput("search needs KEY=VALUE criteria, --text WORDS, or both")
    records = _fetch_limited(
        settings,
        args.limit,
        lambda store, limit: store.list_objects(
            bucket=args.bucket,
            metadata=criteria,
            processing_status=args.status,
            limit=limit,
            versions=_versions(args),
            text=args.text,
        ),
    )
    _print_objects(records, args.json, all_versions=args.all_versions)
    return EXIT_OK


def _cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    if args.growth:
        return _usage_growth(args, settings)
    if args.days is not None or args.bucket is not None or args.user is not None:
        raise InvalidInput("--days, --bucket and --user go with --growth")
    rows = asyncio.run(_with_index(settings, lambda store: store.usage(by=args.by), create=False))
    fields = [usage_fields(row, args.by) for row in rows]
    if args.json:
        sys.stdout.write(json_lines(fields))
    else:
        for row in fields:
            row["size"] = human_bytes(row["bytes"])
            row["stored_size"] = human_bytes(row["stored_bytes"])
        columns = (args.by, "objects", "bytes", "size", "stored_objects", "stored_bytes")
        sys.stdout.write(table(fields, (*columns, "stored_size")))
    return EXIT_OK


def _usage_growth(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    from consumer.index.base import every_day
    from consumer.output import growth_fields

    today = datetime.now(UTC).date()
    first = today - timedelta(days=(args.days or 30) - 1)
    rows = asyncio.run(
        _with_index(
            settings,
            lambda store: store.growth(since=first, bucket=args.bucket, user_id=args.user),
            create=False,
        )
    )
    fields = [growth_fields(row) for row in every_day(rows, first, today)]
    if args.json:
        sys.stdout.write(json_lines(fields))
    else:
        for row in fields:
            for name in ("bytes_created", "bytes_removed"):
                row[name] = human_bytes(row[name])
            row["net_bytes"] = ("-" if row["net_bytes"] < 0 else "") + human_bytes(
                abs(row["net_bytes"])
            )
        columns = (
            "day",
            "objects_created",
            "bytes_created",
            "objects_removed",
            "bytes_removed",
            "net_objects",
            "net_bytes",
        )
        sys.stdout.write(table(fields, columns))
    return EXIT_OK


def _cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.minio_client import minio_client
    from consumer.notify_config import load_notify_config
    from consumer.reconcile import run_reconcile, watched

    buckets = watched(load_notify_config(settings.minio_notify_config, settings), args.bucket)
    report = asyncio.run(
        _with_index(
            settings,
            lambda store: run_reconcile(
                settings, store, minio_client(settings), buckets, repair=args.repair
            ),
        )
    )
    rows = [mismatch.fields() for mismatch in report.mismatches]
    if args.json:
        sys.stdout.write(json_lines(rows))
    elif rows:
        columns = ["kind", "bucket", "key", "version_id", "bucket_size", "bucket_etag"]
        columns += ["index_size", "index_etag"] + (["repair"] if args.repair else [])
        sys.stdout.write(table(rows, columns))
    summary = report.summary()
    line = ", ".join(f"{name}={value}" for name, value in summary.items() if name != "run_id")
    print(f"reconcile {summary['run_id']}: {line}", file=sys.stderr)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from consumer.replay import parse_since, replay_group, run_replay

    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    group = replay_group(settings.kafka_group_id, now)
    print(f"replay: group {group}, from {since.isoformat()}", file=sys.stderr)
    report = asyncio.run(
        _with_index(settings, lambda store: run_replay(settings, store, since, group=group))
    )
    fields = report.fields()
    if args.json:
        print(json.dumps(fields))
    else:
        width = max(len(name) for name in fields)
        sys.stdout.write(
            "".join(f"{name.ljust(width)}  {value}\n" for name, value in fields.items())
        )
    return EXIT_OK


def _cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.retention.policy import load_policies

    policies = load_policies(settings)
    if args.retention_verb == "policies":
        rows = [policy.fields() for policy in policies]
        if args.json:
            sys.stdout.write(json_lines(rows))
        else:
            for row, policy in zip(rows, policies, strict=True):
                row["applies_to"] = policy.describe()
            sys.stdout.write(table(rows, ("name", "enforcement", "applies_to")))
        return EXIT_OK
    if args.retention_verb == "audit":
        return _retention_audit(args, settings, policies)
    return _retention_sweep(args, settings, policies)


def _retention_audit(
    args: argparse.Namespace, settings: Settings, policies: Sequence[RetentionPolicy]
) -> int:
    from consumer.retention.audit import REMOVAL_KINDS, audit_fields

    records = _fetch_limited(
        settings,
        args.limit,
        lambda store, limit: store.journal(
            bucket=args.bucket, key=args.key, kinds=REMOVAL_KINDS, limit=limit
        ),
    )
    # Newest first by event time (the journal returns them by when they were journaled).
    records.sort(key=lambda record: record.event_time, reverse=True)
    rows = [audit_fields(record, policies) for record in records]
    if args.json:
        sys.stdout.write(json_lines(rows))
    else:
        columns = ("event_time", "bucket", "key", "actor", "policy", "principal_id")
        sys.stdout.write(table(rows, columns))
    return EXIT_OK


def _retention_sweep(
    args: argparse.Namespace, settings: Settings, policies: Sequence[RetentionPolicy]
) -> int:
    from consumer.retention.decisions import SweepItem
    from consumer.retention.policy import Enforcement, by_enforcement, policy_named
    from consumer.retention.sweeper import Sweeper

    if args.policy:
        unknown = [name for name in args.policy if policy_named(policies, name) is None]
        if unknown:
            raise InvalidInput(f"no retention policy named {', '.join(unknown)}")
        policies = [policy for policy in policies if policy.name in args.policy]
    rows: list[dict[str, object]] = []

    def show(item: SweepItem) -> None:
        if args.json:
            print(json.dumps(item.fields(), ensure_ascii=False), flush=True)
        else:
            rows.append(item.fields())

    async def sweep(store: IndexStore) -> SweepReport:
        return await Sweeper(settings, store, policies).sweep(dry_run=args.dry_run, on_item=show)

    if not by_enforcement(policies, Enforcement.SWEEPER):
        print(
            "retention sweep: no sweeper policies (lifecycle policies are MinIO's to enforce;"
            " see `retention policies`)",
            file=sys.stderr,
        )
        return EXIT_OK
    report = asyncio.run(_with_index(settings, sweep))
    if report.blocked is not None:
        raise SweepBlocked(report.blocked)
    if not args.json:
        columns = ("policy", "bucket", "key", "version_id", "size", "outcome", "reason")
        sys.stdout.write(table(rows, columns))
    summary = report.summary()
    line = ", ".join(
        f"{name}={summary[name]}"
        for name in ("would_delete", "deleted", "deleted_bytes", "skipped", "failed")
    )
    kept = summary["skipped_by_reason"]
    if kept:
        line += " (" + ", ".join(f"{reason}: {n}" for reason, n in kept.items()) + ")"
    print(f"retention sweep{' (dry run)' if args.dry_run else ''}: {line}", file=sys.stderr)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.health import fetch_or_build_status

    report = asyncio.run(fetch_or_build_status(settings))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        sys.stdout.write(status_table(report))
    return EXIT_FAILURE if report["status"] == "unhealthy" else EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "setup": _cmd_setup,
    "run": _cmd_run,
    "ls": _cmd_ls,
    "search": _cmd_search,
    "usage": _cmd_usage,
    "retention": _cmd_retention,
    "status": _cmd_status,
    "reconcile": _cmd_reconcile,
    "replay": _cmd_replay,
    **CLIENT_COMMANDS,
    "result": cmd_result,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m consumer``; returns the process exit code."""
    try:
        args = _build_parser().parse_args(argv)
    except InvalidInput as exc:  # raised by a type function (e.g. --expires 2hours)
        print(f"python -m consumer: error: {exc} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = _load_settings()
        # A CLI verb's own output is the point: INFO chatter (HTTP requests, connections)
        # would cut into bars and tables. `run` keeps LOG_LEVEL's default; LOG_LEVEL wins.
        explicit = "log_level" in settings.model_fields_set
        level = settings.log_level if explicit or args.verb == "run" else "warning"
        configure_logging(level, secrets=settings.secret_values)
        return _COMMANDS[args.verb](args, settings)
    except (ConfigError, InvalidInput) as exc:
        print(f"consumer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConsumerError as exc:
        print(f"consumer: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        # On a terminal a progress bar may own the line: start a fresh one.
        start = "\n" if sys.stderr.isatty() else ""
        print(f"{start}consumer: interrupted", file=sys.stderr)
        return 130
