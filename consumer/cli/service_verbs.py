"""The service's verbs: setup, run, status, reconcile, replay, retention."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.cli.common import (
    OneLineParser,
    add_display,
    add_json,
    bucket_name,
    fetch_limited,
    note,
    positive_int,
    print_table,
    shows_progress,
    traced,
    with_index,
)
from consumer.cli.exit_codes import ExitCode
from consumer.cli.output import json_lines, status_table
from consumer.cli.progress import screen_of
from consumer.errors import InvalidInput, SweepBlocked
from consumer.index import IndexStore
from consumer.repair.reconcile import Progress
from consumer.service import Role
from consumer.settings import Settings

if TYPE_CHECKING:
    from consumer.retention.decisions import SweepReport
    from consumer.retention.policy import RetentionPolicy


def add_service_verbs(verbs: argparse._SubParsersAction[Any]) -> None:
    setup = verbs.add_parser("setup", help="create buckets, notifications and topics (idempotent)")
    add_json(setup)
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
    setup.set_defaults(handler=cmd_setup)

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
    run.set_defaults(handler=cmd_run)

    status = verbs.add_parser(
        "status",
        help="health report: connections, MinIO success rate, lag, DLQ (exit 1: unhealthy)",
    )
    add_json(status, "the report as one JSON object")
    status.set_defaults(handler=cmd_status)
    _add_reconcile_replay(verbs)
    _add_retention(verbs)


def _add_reconcile_replay(verbs: argparse._SubParsersAction[Any]) -> None:
    reconcile = verbs.add_parser(
        "reconcile", help="compare the buckets with the index (missing, stale, extra)"
    )
    reconcile.add_argument(
        "--bucket", type=bucket_name, help="only this bucket (default: the watched ones)"
    )
    reconcile.add_argument(
        "--repair", action="store_true", help="re-index the differences from MinIO"
    )
    add_json(reconcile)
    add_display(reconcile)
    reconcile.set_defaults(handler=cmd_reconcile)
    replay = verbs.add_parser("replay", help="index the events topic again from a moment on")
    replay.add_argument(
        "--since", required=True, metavar="TIME", help="ISO-8601 time, or 30m, 2h, 7d, 1w ago"
    )
    add_json(replay, "the summary as one JSON object")
    replay.set_defaults(handler=cmd_replay)


def _add_retention(verbs: argparse._SubParsersAction[Any]) -> None:
    retention = verbs.add_parser("retention", help="retention policies: sweep, list, audit")
    actions = retention.add_subparsers(
        dest="retention_verb", required=True, metavar="ACTION", parser_class=OneLineParser
    )
    sweep = actions.add_parser("sweep", help="one sweeper pass over the sweeper policies")
    sweep.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    sweep.add_argument("--policy", action="append", help="only this policy (repeatable)")
    add_json(sweep)
    sweep.set_defaults(handler=cmd_retention_sweep)
    policies = actions.add_parser("policies", help="the policies and who enforces each")
    add_json(policies)
    policies.set_defaults(handler=cmd_retention_policies)
    audit = actions.add_parser("audit", help="deletions from the journal: who and why")
    audit.add_argument("--bucket", help="only this bucket")
    audit.add_argument("--key", help="only this key")
    audit.add_argument("--limit", type=positive_int, default=100, help="at most this many (100)")
    add_json(audit)
    audit.set_defaults(handler=cmd_retention_audit)


# --- handlers ----------------------------------------------------------------------------


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.setup.identities import IdentityOptions
    from consumer.setup.provisioning import run_setup
    from consumer.setup.report import Action

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
    return ExitCode.OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.service import run_service

    asyncio.run(run_service(settings, Role(args.role), burst=args.burst))
    return ExitCode.OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.health import fetch_or_build_status
    from consumer.setup.notify_config import notify_target_id

    report = asyncio.run(fetch_or_build_status(settings, lambda: notify_target_id(settings)))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        sys.stdout.write(status_table(report))
    return ExitCode.FAILURE if report["status"] == "unhealthy" else ExitCode.OK


class _ScreenProgress(Progress):
    """reconcile's progress line on the CLI's screen: log lines go above it, and it is
    cleared before the summary."""

    def __init__(self, enabled: bool) -> None:
        self._screen = screen_of()
        self._enabled = enabled

    def show(self, text: str) -> None:
        if self._enabled:
            self._screen.show(text)

    def done(self) -> None:
        self._screen.clear()


@traced("reconcile")
def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.minio import minio_client
    from consumer.repair.compare import watched
    from consumer.repair.reconcile import run_reconcile
    from consumer.setup.notify_config import load_notify_config

    buckets = watched(load_notify_config(settings.minio_notify_config, settings), args.bucket)
    progress = _ScreenProgress(shows_progress(args))
    try:
        report = asyncio.run(
            with_index(
                settings,
                lambda store: run_reconcile(
                    settings,
                    store,
                    minio_client(settings),
                    buckets,
                    repair=args.repair,
                    progress=progress,
                ),
            )
        )
    finally:
        progress.done()
    rows = [mismatch.fields() for mismatch in report.mismatches]
    if args.json:
        sys.stdout.write(json_lines(rows))
    elif rows:
        columns = ["kind", "bucket", "key", "version_id", "bucket_size", "bucket_etag"]
        columns += ["index_size", "index_etag"] + (["repair"] if args.repair else [])
        print_table(rows, columns, sizes=("bucket_size", "index_size"), cut=("key", "bucket"))
    summary = report.summary()
    line = ", ".join(f"{name}={value}" for name, value in summary.items() if name != "run_id")
    note(args, f"reconcile {summary['run_id']}: {line}")
    return ExitCode.OK


@traced("replay")
def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from consumer.repair.replay import parse_since, replay_group, run_replay

    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    group = replay_group(settings.kafka_group_id, now)
    print(f"replay: group {group}, from {since.isoformat()}", file=sys.stderr)
    report = asyncio.run(
        with_index(settings, lambda store: run_replay(settings, store, since, group=group))
    )
    fields = report.fields()
    if args.json:
        print(json.dumps(fields))
    else:
        width = max(len(name) for name in fields)
        sys.stdout.write(
            "".join(f"{name.ljust(width)}  {value}\n" for name, value in fields.items())
        )
    return ExitCode.OK


def cmd_retention_policies(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.retention.policy import load_policies

    policies = load_policies(settings)
    rows = [policy.fields() for policy in policies]
    if args.json:
        sys.stdout.write(json_lines(rows))
    else:
        for row, policy in zip(rows, policies, strict=True):
            row["applies_to"] = policy.describe()
        print_table(rows, ("name", "enforcement", "applies_to"))
    return ExitCode.OK


def cmd_retention_audit(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.retention.audit import REMOVAL_KINDS, audit_fields
    from consumer.retention.policy import load_policies

    policies = load_policies(settings)
    records = fetch_limited(
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
        print_table(rows, columns, times=("event_time",), cut=("key", "bucket", "principal_id"))
    return ExitCode.OK


@traced("retention sweep")
def cmd_retention_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.retention.policy import Enforcement, by_enforcement, load_policies

    policies = _chosen_policies(load_policies(settings), args.policy)
    if not by_enforcement(policies, Enforcement.SWEEPER):
        print(
            "retention sweep: no sweeper policies (lifecycle policies are MinIO's to enforce;"
            " see `retention policies`)",
            file=sys.stderr,
        )
        return ExitCode.OK
    return _sweep(args, settings, policies)


def _chosen_policies(
    policies: Sequence[RetentionPolicy], names: Sequence[str] | None
) -> Sequence[RetentionPolicy]:
    from consumer.retention.policy import policy_named

    if not names:
        return policies
    unknown = [name for name in names if policy_named(policies, name) is None]
    if unknown:
        raise InvalidInput(f"no retention policy named {', '.join(unknown)}")
    return [policy for policy in policies if policy.name in names]


def _sweep(
    args: argparse.Namespace, settings: Settings, policies: Sequence[RetentionPolicy]
) -> int:
    from consumer.retention.decisions import SweepItem
    from consumer.retention.sweeper import Sweeper

    rows: list[dict[str, object]] = []

    def show(item: SweepItem) -> None:
        if args.json:
            print(json.dumps(item.fields(), ensure_ascii=False), flush=True)
        else:
            rows.append(item.fields())

    async def sweep(store: IndexStore) -> SweepReport:
        return await Sweeper(settings, store, policies).sweep(dry_run=args.dry_run, on_item=show)

    report = asyncio.run(with_index(settings, sweep))
    if report.blocked is not None:
        raise SweepBlocked(report.blocked)
    if not args.json:
        columns = ("policy", "bucket", "key", "version_id", "size", "outcome", "reason")
        print_table(rows, columns, sizes=("size",), cut=("key", "bucket", "version_id", "reason"))
    summary = report.summary()
    line = ", ".join(
        f"{name}={summary[name]}"
        for name in ("would_delete", "deleted", "deleted_bytes", "skipped", "failed")
    )
    kept = summary["skipped_by_reason"]
    if kept:
        line += " (" + ", ".join(f"{reason}: {n}" for reason, n in kept.items()) + ")"
    print(f"retention sweep{' (dry run)' if args.dry_run else ''}: {line}", file=sys.stderr)
    return ExitCode.OK
