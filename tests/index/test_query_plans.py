"""The listings read through an index on both backends: no full scan of objects, journal
or jobs on the paths that had an index before the layout designed for writing (version 5).

SQLite: EXPLAIN QUERY PLAN names every ``SCAN`` of a table (a full pass over it). A scan
of a CTE or a VALUES list is fine. PostgreSQL: with sequential scans switched off, the
planner still takes one only when no index can serve the query; so a ``Seq Scan`` on one
of the three tables means the path has no index.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import asyncpg
import pytest

from consumer.events import EventKind
from consumer.index import ObjectQuery, PostgresIndex, SqliteIndex
from consumer.index.sql import Dialect, jobs_query, journal_query, listing_query, numbered
from consumer.index.sql_index import _GET_OBJECT, _PRUNE_JOURNAL
from tests.conftest import Backend
from tests.index.factories import T0, history

pytestmark = pytest.mark.integration

TABLES = ("objects", "journal", "jobs", "journal_heads")
# The newest entries of the whole journal: a pass in id order (the primary key, newest
# first) that stops at the limit, on both layouts; never a sort of the table.
IN_ORDER = {"journal"}


def plans(dialect: Dialect) -> dict[str, tuple[str, list[object]]]:
    """Every listing that had an index, as SQL and parameters of the dialect."""
    listings = {
        "lookup": ObjectQuery(bucket="bkt", prefix="user_1/f1.ogg", limit=1),
        "bucket": ObjectQuery(bucket="bkt"),
        "bucket with tombstones": ObjectQuery(bucket="bkt", include_deleted=True),
        "prefix": ObjectQuery(bucket="bkt", prefix="user_2/"),
        "page": ObjectQuery(bucket="bkt", after=("bkt", "user_2/f3.ogg", ""), limit=10),
        "user": ObjectQuery(user_id="2"),
        "user in a bucket": ObjectQuery(user_id="5", bucket="b2", include_deleted=True),
    }
    found = {name: listing_query(query, dialect) for name, query in listings.items()}
    found["get"] = (numbered(_GET_OBJECT, dialect.placeholder), ["bkt", "user_1/f1.ogg", ""])
    found["journal"] = journal_query(dialect, bucket=None, key=None, kinds=None, limit=100)
    found["history"] = journal_query(
        dialect, bucket="bkt", key="user_1/f1.ogg", kinds=None, limit=100
    )
    found["history of kinds"] = journal_query(
        dialect, bucket="bkt", key="user_1/f1.ogg", kinds={EventKind.CREATED}, limit=100
    )
    found["prune"] = (numbered(_PRUNE_JOURNAL, dialect.placeholder), [dialect.moment(T0)])
    found["jobs of a key"] = jobs_query(
        dialect.placeholder, bucket="bkt", key="user_1/f1.ogg", status=None, limit=10
    )
    return found


def sqlite_scans(plan: list[Any]) -> list[str]:
    """The plan's full passes over a table (``SCAN objects``, ``SCAN o``, …)."""
    details = [str(row[-1]) for row in plan]
    aliases = {"o": "objects", "j": "journal", "h": "journal_heads"}
    scans = []
    for detail in details:
        match = re.match(r"SCAN (\w+)", detail)
        if match and aliases.get(match[1], match[1]) in TABLES:
            scans.append(detail)
    return scans


async def filled(backend: Backend) -> None:
    async with backend.new_store() as store:
        events = history(count=3000)
        for start in range(0, len(events), 500):
            await store.apply_batch([(e, None) for e in events[start : start + 500]])


async def test_sqlite_listings_use_an_index(tmp_path: Any) -> None:
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'index.sqlite3'}")
    await filled(backend)
    with sqlite3.connect(tmp_path / "index.sqlite3") as conn:
        conn.execute("ANALYZE")
        explained = {
            name: conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            for name, (sql, params) in plans(SqliteIndex.dialect).items()
        }
    conn.close()
    scans = {name: sqlite_scans(plan) for name, plan in explained.items() if name not in IN_ORDER}
    assert {name: found for name, found in scans.items() if found} == {}
    for name in IN_ORDER:
        assert [str(row[-1]) for row in explained[name]] == ["SCAN journal"]


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_postgres_listings_use_an_index(backend: Backend) -> None:
    await filled(backend)
    conn = await asyncpg.connect(backend.url)
    try:
        await conn.execute("ANALYZE")
        await conn.execute("SET enable_seqscan = off")
        scans: dict[str, list[str]] = {}
        for name, (sql, params) in plans(PostgresIndex.dialect).items():
            lines = [row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *params)]
            found = [
                line for line in lines if re.search(rf"Seq Scan on ({'|'.join(TABLES)})\b", line)
            ]
            if found:
                scans[name] = found
    finally:
        await conn.close()
    assert scans == {}
