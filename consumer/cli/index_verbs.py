"""The verbs that read the index: ls, search, usage. Read-only: they refuse an index that
does not exist rather than create an empty one."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from consumer.cli.common import (
    add_all_versions,
    add_json,
    bucket_name,
    fetch_limited,
    positive_int,
    print_table,
    versions,
    with_index,
)
from consumer.cli.exit_codes import ExitCode
from consumer.cli.output import human_bytes, json_lines, object_fields, usage_fields
from consumer.errors import InvalidInput
from consumer.index import IndexStore, JobStatus, ObjectQuery, ObjectRecord
from consumer.settings import Settings

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

# On a narrow terminal these go first (--json has them all), then keys are cut.
_DROP_FIRST = ("metadata", "content_type", "user_id", "is_latest")
_SHORT_LABELS = {
    "processing_status": "status",
    "event_time": "time",
    "content_type": "type",
    "user_id": "user",
    "delete_marker": "marker",
    "version_id": "version",
}

ObjectId = tuple[str, str, str]  # bucket, key, version id


def add_index_verbs(verbs: argparse._SubParsersAction[Any]) -> None:
    ls = verbs.add_parser("ls", help="live objects from the index (the latest version of each)")
    ls.add_argument("--bucket", type=bucket_name, help="only this bucket")
    ls.add_argument("--user", help="only this user's objects")
    ls.add_argument("--prefix", help="only keys starting with this")
    _add_status_filter(ls)
    add_all_versions(ls)
    ls.add_argument("--limit", type=positive_int, default=1000, help="at most this many (1000)")
    add_json(ls)
    ls.set_defaults(handler=cmd_ls)

    search = verbs.add_parser(
        "search", help="live objects whose metadata match KEY=VALUE… and/or transcript --text"
    )
    search.add_argument("criteria", nargs="*", metavar="KEY=VALUE", help="metadata to match")
    search.add_argument("--text", help="words the transcript must contain (full-text search)")
    search.add_argument("--bucket", type=bucket_name, help="only this bucket")
    _add_status_filter(search)
    add_all_versions(search)
    search.add_argument("--limit", type=positive_int, default=1000, help="at most this many")
    add_json(search)
    search.set_defaults(handler=cmd_search)

    usage = verbs.add_parser("usage", help="objects and bytes per user or bucket")
    usage.add_argument("--by", choices=["user", "bucket"], default="user", help="(user)")
    add_json(usage)
    usage.add_argument(
        "--growth", action="store_true", help="objects and bytes per UTC day, from the journal"
    )
    usage.add_argument("--days", type=positive_int, help="with --growth: days back (30)")
    usage.add_argument("--bucket", type=bucket_name, help="with --growth: only this bucket")
    usage.add_argument("--user", help="with --growth: only this user's objects")
    usage.set_defaults(handler=cmd_usage)


def _add_status_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        choices=[status.value for status in JobStatus],
        help="only objects whose processing status is this (failed: with each job's error)",
    )


def parse_criteria(criteria: Sequence[str]) -> dict[str, str]:
    """``["session-type=interview", …]`` → a metadata filter. Raises InvalidInput."""
    parsed: dict[str, str] = {}
    for item in criteria:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"search criteria must be KEY=VALUE, got {item!r}")
        parsed[name.strip().lower()] = value
    return parsed


async def last_errors(
    store: IndexStore, records: Sequence[ObjectRecord]
) -> dict[ObjectId, dict[str, str]]:
    """The failed jobs' last errors of the failed ``records``: (bucket, key, version) →
    processor → error."""
    errors: dict[ObjectId, dict[str, str]] = {}
    failed = {(r.bucket, r.key) for r in records if r.processing_status == "failed"}
    for bucket, key in sorted(failed):
        for job in await store.jobs(bucket=bucket, key=key, status=JobStatus.FAILED):
            ident = (job.bucket, job.key, job.version_id)
            errors.setdefault(ident, {})[job.processor] = job.last_error or "(no reason recorded)"
    return errors


def error_cell(errors: Mapping[str, str]) -> str:
    """``transcribe: HTTP 500; audio-probe: not audio`` on one line."""
    return "; ".join(f"{name}: {' '.join(error.split())}" for name, error in sorted(errors.items()))


def _print_objects(
    settings: Settings, records: Sequence[ObjectRecord], args: argparse.Namespace
) -> None:
    errors: dict[ObjectId, dict[str, str]] = {}
    if any(record.processing_status == "failed" for record in records):
        errors = asyncio.run(
            with_index(settings, lambda store: last_errors(store, records), create=False)
        )
    rows = []
    for record in records:
        row = object_fields(record)
        failed = errors.get((record.bucket, record.key, record.version_id))
        if failed:
            row["errors"] = failed
        rows.append(row)
    if args.json:
        sys.stdout.write(json_lines(rows))
        return
    columns = list(_OBJECT_COLUMNS)
    if args.all_versions:
        columns[2:2] = _VERSION_COLUMNS
    if any(record.snippet is not None for record in records):
        columns.insert(2, "snippet")
    if errors:
        columns.insert(columns.index("processing_status") + 1, "last_error")
        for row in rows:
            if "errors" in row:
                row["last_error"] = error_cell(row["errors"])
    print_table(
        rows,
        columns,
        sizes=("size",),
        times=("event_time",),
        drop=_DROP_FIRST,
        cut=("key", "bucket", "snippet", "last_error", "metadata", "version_id"),
        labels=_SHORT_LABELS,
    )


def cmd_ls(args: argparse.Namespace, settings: Settings) -> int:
    query = ObjectQuery(
        bucket=args.bucket,
        user_id=args.user,
        prefix=args.prefix,
        processing_status=args.status,
        versions=versions(args),
    )
    _print_objects(settings, _listed(settings, args, query), args)
    return ExitCode.OK


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    criteria = parse_criteria(args.criteria)
    if not criteria and args.text is None:
        raise InvalidInput("search needs KEY=VALUE criteria, --text WORDS, or both")
    query = ObjectQuery(
        bucket=args.bucket,
        metadata=criteria,
        processing_status=args.status,
        versions=versions(args),
        text=args.text,
    )
    _print_objects(settings, _listed(settings, args, query), args)
    return ExitCode.OK


def _listed(settings: Settings, args: argparse.Namespace, query: ObjectQuery) -> list[ObjectRecord]:
    """The objects ``query`` selects, at most ``--limit`` of them (see fetch_limited)."""
    return fetch_limited(
        settings,
        args.limit,
        lambda store, limit: store.list_objects(dataclasses.replace(query, limit=limit)),
    )


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    if args.growth:
        return _usage_growth(args, settings)
    if args.days is not None or args.bucket is not None or args.user is not None:
        raise InvalidInput("--days, --bucket and --user go with --growth")
    rows = asyncio.run(with_index(settings, lambda store: store.usage(by=args.by), create=False))
    fields = [usage_fields(row, args.by) for row in rows]
    if args.json:
        sys.stdout.write(json_lines(fields))
    else:
        for row in fields:
            row["size"] = human_bytes(row["bytes"])
            row["stored_size"] = human_bytes(row["stored_bytes"])
        columns = (args.by, "objects", "bytes", "size", "stored_objects", "stored_bytes")
        print_table(fields, (*columns, "stored_size"))
    return ExitCode.OK


def _usage_growth(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    from consumer.cli.output import growth_fields
    from consumer.index.sql import every_day

    today = datetime.now(UTC).date()
    first = today - timedelta(days=(args.days or 30) - 1)
    rows = asyncio.run(
        with_index(
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
        print_table(fields, columns)
    return ExitCode.OK
