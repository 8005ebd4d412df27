"""replay --since and usage --growth through the CLI, against the real stack.

Replaying what was indexed already changes nothing (the journal knows every event);
replaying into a lost (fresh) index rebuilds it equal to the bucket.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from tests.conftest import StackEndpoints, unique_name
from tests.helpers import Published
from tests.integration.test_cli_e2e import cli_env, run_cli

pytestmark = pytest.mark.integration


def _rows(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _journal_dump(index_file: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(index_file) as conn:
        return list(conn.execute("SELECT * FROM journal ORDER BY id"))


def _listing(minio: Minio, bucket: str) -> set[tuple[str, int, str]]:
    return {
        (o.object_name or "", o.size or 0, (o.etag or "").strip('"'))
        for o in minio.list_objects(bucket, recursive=True)
    }


async def test_replay_is_idempotent_and_rebuilds_a_lost_index(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket = make_bucket("replay")
    before_first_event = datetime.now(UTC) - timedelta(seconds=2)
    published = Published(stack)
    await published.mark()
    for n in range(4):
        body = f"recording {n}".encode() * (n + 1)
        minio.put_object(bucket, f"user_{n}/take.ogg", io.BytesIO(body), len(body))
    minio.put_object(bucket, "user_0/take.ogg", io.BytesIO(b"overwritten"), 11)
    minio.remove_object(bucket, "user_3/take.ogg")
    await published.wait(bucket, 6)

    env = cli_env(stack, tmp_path, unique_name("g"))
    index_file = tmp_path / "index.sqlite3"
    indexed = run_cli(env, "run", "--role", "indexer", "--burst", timeout_s=180)
    assert indexed.returncode == 0, indexed.stderr
    ls_before = _rows(run_cli(env, "ls", "--limit", "100000", "--json"))
    journal_before = _journal_dump(index_file)
    assert {(r["key"], r["size"], r["etag"]) for r in ls_before if r["bucket"] == bucket} == (
        _listing(minio, bucket)
    )

    since = before_first_event.isoformat()
    again = run_cli(env, "replay", "--since", since, "--json", timeout_s=180)
    (report,) = _rows(again)
    assert report["group"].startswith(env["KAFKA_GROUP_ID"] + "-replay-")
    assert report["group"] in again.stderr  # printed, to find the group later
    assert report["events_read"] >= 6
    assert report["messages_in_window"] >= 6
    assert (report["journaled"], report["objects_changed"]) == (0, 0)
    assert report["duplicates"] == report["events_read"]
    assert _rows(run_cli(env, "ls", "--limit", "100000", "--json")) == ls_before
    assert _journal_dump(index_file) == journal_before

    lost = dict(env, INDEX_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    (rebuilt,) = _rows(run_cli(lost, "replay", "--since", since, "--json", timeout_s=180))
    assert rebuilt["journaled"] >= 6
    rows = _rows(run_cli(lost, "ls", "--bucket", bucket, "--json"))
    assert {(r["key"], r["size"], r["etag"]) for r in rows} == _listing(minio, bucket)

    growth = _rows(run_cli(lost, "usage", "--growth", "--days", "2", "--bucket", bucket, "--json"))
    today = datetime.now(UTC).date()
    assert [g["day"] for g in growth] == [str(today - timedelta(days=1)), str(today)]
    # 4 objects written, one of them overwritten, one removed: 3 live, as `usage` says.
    assert (growth[1]["objects_created"], growth[1]["objects_removed"]) == (4, 1)
    assert sum(g["net_bytes"] for g in growth) == sum(
        size for _, size, _ in _listing(minio, bucket)
    )
    assert growth[0]["net_objects"] == 0
    table = run_cli(lost, "usage", "--growth", "--days", "1", "--bucket", bucket)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:2] == ["DAY", "OBJECTS_CREATED"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--since", "yesterday"], "consumer: error: --since 'yesterday'"),
        (["replay", "--since", "2999-01-01"], "is in the future"),
        (["replay"], "the following arguments are required: --since"),
        (["usage", "--days", "3"], "--days, --bucket and --user go with --growth"),
        (["usage", "--growth", "--days", "0"], "must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    stack: StackEndpoints, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli(cli_env(stack, tmp_path, unique_name("g")), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
