"""``history BUCKET/KEY [--version-id V] [--json]``: one object's story, oldest first
(consumer/client/history.py builds it; this module only prints it)."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.cli.common import (
    add_json,
    bucket_name,
    emit,
    print_table,
    require_index,
    split_bucket_key,
    with_client,
)
from consumer.cli.exit_codes import ExitCode
from consumer.client.api import VoxClient
from consumer.client.history import ObjectHistory, version_label
from consumer.settings import Settings

_COLUMNS = ("at", "version", "source", "what", "who", "origin")


def add_history_verb(verbs: argparse._SubParsersAction[Any]) -> None:
    history = verbs.add_parser(
        "history",
        help="an object's story, oldest first: events (who, when), processing, retention",
    )
    history.add_argument("target", metavar="BUCKET/KEY", help="the object (or KEY with --bucket)")
    history.add_argument("--bucket", type=bucket_name, help="the bucket, when TARGET is a key")
    history.add_argument("--version-id", help="only this version's story")
    add_json(history, "one JSON object per step, oldest first")
    history.set_defaults(handler=cmd_history)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    bucket, key = split_bucket_key(args.target, args.bucket)
    require_index(settings.index_url)

    async def story(client: VoxClient) -> int:
        history = await client.history(bucket, key, version_id=args.version_id)
        if args.json:
            for row in history.rows():
                emit({"bucket": bucket, "key": key, **row})
        else:
            print_story(history)
        return ExitCode.OK

    return with_client(settings, story)


def print_story(history: ObjectHistory) -> None:
    print(f"{history.bucket}/{history.key}")
    for version_id in history.versions:
        if version_id:
            print(f"  {version_label(version_id, history.versions)} = version {version_id}")
    for policy in history.policies:
        print(f"  retention: {policy}")
    rows = [
        {**row, "who": row["who"] or "", "origin": row["origin"] or ""} for row in history.rows()
    ]
    print_table(rows, _COLUMNS, times=("at",), drop=("who",), cut=("what", "origin"))
