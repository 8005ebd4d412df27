"""``python -m consumer result BUCKET/KEY [--processor P] [--wait 60s] [--json]``.

Prints each processor's outcome on the object's current content: done with its result
(for transcribe, the transcript), or failed with the reason. Without ``--wait`` it says
what is known now; with it, it waits until every job finished. Exit 0 when every outcome
is done, 1 when one failed or nothing finished in time, 2 for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from consumer.client.api import VoxClient
from consumer.client.commands import split_bucket_key
from consumer.durations import parse_duration
from consumer.errors import NotFound
from consumer.output import json_lines
from consumer.results import ProcessedResult
from consumer.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1


def add_result_verb(verbs: argparse._SubParsersAction[Any]) -> None:
    result = verbs.add_parser(
        "result", help="the processors' results of BUCKET/KEY (the transcript), or why not"
    )
    result.add_argument("target", metavar="BUCKET/KEY")
    result.add_argument("--processor", help="only this processor's result (e.g. transcribe)")
    result.add_argument("--wait", metavar="DURATION", help="wait until processed, e.g. 60s")
    result.add_argument("--json", action="store_true", help="one JSON object per processor")


def outcome_line(outcome: ProcessedResult) -> str:
    """One processor's outcome on one line: the transcript, the result, or the reason."""
    if outcome.status == "failed":
        detail = outcome.error or "(no reason recorded)"
    elif outcome.text is not None:
        detail = outcome.text
    else:
        detail = json.dumps(outcome.result, ensure_ascii=False, sort_keys=True)
    return f"{outcome.processor:<12} {outcome.status:<6} {' '.join(detail.split())}\n"


def cmd_result(args: argparse.Namespace, settings: Settings) -> int:
    bucket, key = split_bucket_key(args.target, None)
    timeout_s = parse_duration(args.wait).total_seconds() if args.wait else 0.0
    processors = [args.processor] if args.processor else None

    async def fetch() -> list[ProcessedResult]:
        async with VoxClient(settings) as client:
            return await client.wait_processed(
                bucket, key, processors=processors, timeout_s=timeout_s
            )

    try:
        outcomes = asyncio.run(fetch())
    except NotFound as exc:
        hint = "" if args.wait else " (--wait 60s waits for it)"
        print(f"consumer: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        sys.stdout.write(json_lines(outcome.as_dict() for outcome in outcomes))
    else:
        sys.stdout.write("".join(outcome_line(outcome) for outcome in outcomes))
    return EXIT_FAILURE if any(o.status == "failed" for o in outcomes) else EXIT_OK
