"""Version 5 (the layout designed for writing) migrates an index of the old layout in place.

An index is filled through the store (the new layout, its history chains built batch by
batch); its rows are copied into a database of the old layout (migrations 1-4), which
``start()`` then migrates. The migrated index must hold the same chains as the one built
incrementally and answer every read the same: listings in every view, lookups, usage,
growth, the journal (per key too), jobs, counts and text search; and stay the same after
the same prune and the same next batch on both.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from consumer.events import EventKind, ObjectEvent
from consumer.index import (
    IndexStore,
    JobRequest,
    JournalRecord,
    ObjectQuery,
    ObjectRecord,
    Transcript,
    Versions,
)
from consumer.index.migrations import MIGRATIONS, migrate_postgres, migrate_sqlite
from consumer.index.records import Lease
from consumer.index.sqlite import SqliteIndex
from tests.conftest import Backend, _admin
from tests.index.factories import T0, event, history

pytestmark = pytest.mark.integration

OLD_LAYOUT = MIGRATIONS[:4]


async def fill(store: IndexStore, events: list[ObjectEvent]) -> None:
    for start in range(0, len(events), 64):
        await store.apply_batch([(e, None) for e in events[start : start + 64]])
    requests = [
        JobRequest(e.bucket, e.key, e.version_id, "probe", e.sequencer, e.etag, e.size)
        for e in events[:80]
        if e.kind is EventKind.CREATED
    ]
    await store.claim_jobs(requests, Lease("runner-1", 300.0))
    for e in events[:30]:
        if e.kind is EventKind.CREATED:
            text = f"запись номер {e.sequencer} budget review"
            await store.put_transcript(
                Transcript(e.bucket, e.key, e.version_id, "whisper", text, "ru")
            )


async def reads(store: IndexStore) -> dict[str, Any]:
    """Every read a user makes, keyed by what it is."""
    seen: dict[str, Any] = {}
    queries = {
        "rows": ObjectQuery(limit=5000),
        "rows+deleted": ObjectQuery(include_deleted=True, limit=5000),
        "bucket": ObjectQuery(bucket="bkt", limit=5000),
        "prefix": ObjectQuery(bucket="bkt", prefix="user_2/", include_deleted=True),
        "current": ObjectQuery(versions=Versions.CURRENT, limit=5000),
        "all": ObjectQuery(versions=Versions.ALL, limit=5000),
        "metadata": ObjectQuery(metadata={"lang": "ru"}, limit=5000),
        "text": ObjectQuery(text="budget", versions=Versions.CURRENT),
        "page": ObjectQuery(bucket="b2", after=("b2", "user_3/", ""), limit=7),
    }
    for user in ("1", "2", "5", "6", "nobody"):
        queries[f"user {user}"] = ObjectQuery(user_id=user, include_deleted=True, limit=5000)
        queries[f"user {user} live"] = ObjectQuery(user_id=user, bucket="bkt", limit=5000)
        queries[f"user {user} current"] = ObjectQuery(user_id=user, versions=Versions.CURRENT)
    for name, query in queries.items():
        seen[name] = await store.list_objects(query)
    seen["usage user"] = await store.usage(by="user")
    seen["usage bucket"] = await store.usage(by="bucket")
    seen["growth"] = await store.growth(since=date(2025, 12, 1))
    seen["growth user"] = await store.growth(since=T0.date(), user_id="2", bucket="bkt")
    seen["journal"] = await store.journal(limit=10_000)
    seen["journal removals"] = await store.journal(kinds={EventKind.REMOVED}, limit=10_000)
    seen["journal bucket"] = await store.journal(bucket="b2", limit=10_000)
    for row in seen["rows+deleted"][:60] + seen["all"][-20:]:
        for kinds in (None, {EventKind.CREATED}):
            seen[f"history {row.bucket} {row.key} {kinds}"] = await store.journal(
                bucket=row.bucket, key=row.key, kinds=kinds, limit=1000
            )
    seen["history of a journal-only key"] = await store.journal(bucket="bkt", key="never")
    seen["jobs"] = await store.jobs()
    seen["counts"] = await store.counts()
    seen["get"] = [
        await store.get_object(row.bucket, row.key, row.version_id)
        for row in seen["rows+deleted"][:50]
    ]
    return seen


def timeless(seen: dict[str, Any]) -> dict[str, Any]:
    """``seen`` without the moments of writing (two stores write the same batch at two
    moments)."""

    def strip(value: Any) -> Any:
        if isinstance(value, list):
            return [strip(item) for item in value]
        if isinstance(value, ObjectRecord):
            return dataclasses.replace(value, indexed_at=T0)
        if isinstance(value, JournalRecord):
            return dataclasses.replace(value, recorded_at=T0)
        return value

    return {name: strip(value) for name, value in seen.items()}


# --- the old layout, filled with the rows of a new one ------------------------------------


_OLD_OBJECT_COLUMNS = (
    "bucket, key, version_id, size, etag, content_type, user_metadata, user_id,"
    " first_event_time, last_event_time, sequencer, last_event_name, deleted, deleted_at,"
    " indexed_at"
)
_OLD_JOURNAL_COLUMNS = (
    "id, bucket, key, version_id, event_name, kind, event_time, sequencer, principal_id,"
    " source_ip, user_agent, request_id, size, etag, kafka_topic, kafka_partition,"
    " kafka_offset, recorded_at"
)
_COPIED = {
    "objects": _OLD_OBJECT_COLUMNS,
    "journal": _OLD_JOURNAL_COLUMNS,
    "jobs": "*",
    "transcripts": "bucket, key, version_id, processor, language, text, updated_at",
}


def sqlite_old_copy(source: str, target: str, extra_sequence: int = 0) -> None:
    with sqlite3.connect(target, isolation_level=None) as conn:
        migrate_sqlite(conn, OLD_LAYOUT)
        conn.execute("ATTACH DATABASE ? AS new", (source,))
        for table, columns in _COPIED.items():
            listed = "" if columns == "*" else f" ({columns})"
            conn.execute(f"INSERT INTO main.{table}{listed} SELECT {columns} FROM new.{table}")
        conn.execute(
            "UPDATE main.sqlite_sequence SET seq = seq + ? WHERE name = 'journal'",
            (extra_sequence,),
        )
        conn.execute("DETACH DATABASE new")
    conn.close()


async def postgres_old_copy(source_url: str, target_url: str) -> None:
    source = await asyncpg.connect(source_url)
    target = await asyncpg.connect(target_url)
    try:
        await migrate_postgres(target, OLD_LAYOUT)
        for table, columns in _COPIED.items():
            if table == "transcripts":
                await _copy_pg_transcripts(source, target)
                continue
            rows = await source.fetch(f"SELECT {columns} FROM {table}")
            names = list(rows[0].keys()) if rows else None
            if rows:
                await target.copy_records_to_table(
                    table, records=[tuple(r) for r in rows], columns=names
                )
        await target.execute(
            "SELECT setval(pg_get_serial_sequence('journal', 'id'), max(id)) FROM journal"
        )
    finally:
        await source.close()
        await target.close()


async def _copy_pg_transcripts(source: Any, target: Any) -> None:
    # regconfig travels as text (asyncpg has no binary codec for it).
    rows = await source.fetch(
        "SELECT bucket, key, version_id, processor, language, config::text, text, updated_at"
        " FROM transcripts"
    )
    await target.executemany(
        "INSERT INTO transcripts (bucket, key, version_id, processor, language, config, text,"
        " document, updated_at) VALUES ($1, $2, $3, $4, $5, $6::regconfig, $7,"
        " to_tsvector($6::regconfig, $7), $8)",
        [tuple(row) for row in rows],
    )


async def old_layout_copy(backend: Backend, fresh: Backend) -> None:
    if backend.name == "sqlite":
        sqlite_old_copy(_path(backend), _path(fresh))
    else:
        await postgres_old_copy(backend.url, fresh.url)


def _path(backend: Backend) -> str:
    return backend.url.removeprefix("sqlite:///")


@pytest.fixture
async def other(backend: Backend, request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """A second, empty database on the same backend."""
    if backend.name == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'old.sqlite3'}")
        return
    name = f"test_{uuid.uuid4().hex}"
    admin = request.getfixturevalue("pg_admin_url")
    await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield Backend("postgres", urlsplit(admin)._replace(path=f"/{name}").geturl())
    finally:
        await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def chains(backend: Backend) -> list[Any]:
    if backend.name != "sqlite":
        return []
    return [
        await backend.fetch("SELECT id, prev_id FROM journal ORDER BY id"),
        await backend.fetch(
            "SELECT bucket, key, version_id, last_journal_id FROM objects ORDER BY 1, 2, 3"
        ),
        await backend.fetch("SELECT * FROM journal_heads ORDER BY 1, 2, 3"),
    ]


async def test_old_layout_migrates_in_place_and_loses_nothing(
    backend: Backend, other: Backend
) -> None:
    events = history()
    async with backend.new_store() as built:
        await fill(built, events)
        expected = await reads(built)
    await old_layout_copy(backend, other)
    before = await other.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert before == [(m.version,) for m in OLD_LAYOUT]
    async with other.new_store() as migrated:
        assert await reads(migrated) == expected
    assert await chains(other) == await chains(backend)

    # Afterwards both go on alike: the same prune, the same next batch.
    cutoff = T0 + timedelta(seconds=200)
    late = [event(seq=s, key=f"user_1/f{s % 7}.ogg") for s in range(2000, 2040)]
    outcomes = []
    for target in (backend, other):
        async with target.new_store() as store:
            pruned = await store.prune_journal(cutoff)
            applied = await store.apply_batch([(e, None) for e in [*late, *events[-30:]]])
            outcomes.append((pruned, applied, timeless(await reads(store))))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] > 0
    assert await chains(other) == await chains(backend)


async def test_sqlite_ids_freed_by_pruning_stay_unused(tmp_path: Any) -> None:
    built, old = tmp_path / "built.sqlite3", tmp_path / "old.sqlite3"
    async with SqliteIndex(built) as store:
        await fill(store, history(count=60))
    sqlite_old_copy(str(built), str(old), extra_sequence=5)  # the last five were pruned
    with sqlite3.connect(old) as conn:
        (last,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
    async with SqliteIndex(old) as store:
        await store.apply_batch([(event(seq=9999, key="user_1/new.ogg"), None)])
        (newest,) = await store.journal(limit=1)
    assert newest.id == last + 1
