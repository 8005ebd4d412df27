"""One contract for the index, run against SQLite and against a real PostgreSQL.

Every test gets a fresh database (tests/index/conftest.py); both backends must give the
same answers, including ordering, so the CLI and the indexer do not care which one runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest

from consumer.errors import InvalidInput, LeaseLost
from consumer.events import EventKind, ObjectEvent
from consumer.index import (
    MIGRATIONS,
    BatchResult,
    IndexStore,
    IndexUnavailable,
    JobOutcome,
    JobRequest,
    JobStatus,
    KafkaPosition,
    ObjectQuery,
    ObjectRecord,
    UsageRow,
)
from consumer.index.records import Claims, Lease
from tests.conftest import Backend
from tests.index.factories import T0, event

pytestmark = pytest.mark.integration

C, M, R, X = (
    EventKind.CREATED,
    EventKind.METADATA_CHANGED,
    EventKind.REMOVED,
    EventKind.EXPIRED,
)


async def apply(store: IndexStore, *events: ObjectEvent) -> BatchResult:
    return await store.apply_batch([(e, None) for e in events])


async def get(store: IndexStore, key: str = "user_1/a.ogg", version_id: str = "") -> ObjectRecord:
    record = await store.get_object("bkt", key, version_id)
    assert record is not None, f"{key!r} not indexed"
    return record


async def keys(store: IndexStore, **filters: object) -> list[str]:
    return [r.key for r in await store.list_objects(ObjectQuery(**filters))]  # type: ignore[arg-type]


# --- lifecycle and migrations ------------------------------------------------------------


class TestLifecycle:
    async def test_start_twice_and_restart_apply_migrations_once(
        self, backend: Backend, store: IndexStore
    ) -> None:
        await store.start()
        async with backend.new_store() as again:
            await again.ping()
        assert await backend.fetch("SELECT version FROM schema_migrations ORDER BY version") == [
            (m.version,) for m in MIGRATIONS
        ]

    async def test_concurrent_starts_on_one_database(self, backend: Backend) -> None:
        stores = [backend.new_store() for _ in range(4)]
        try:
            await asyncio.gather(*(s.start() for s in stores))
            await apply(stores[0], event(seq=1))
            assert await stores[3].get_object("bkt", "user_1/a.ogg") is not None
        finally:
            await asyncio.gather(*(s.close() for s in stores))
        assert await backend.fetch("SELECT version FROM schema_migrations ORDER BY version") == [
            (m.version,) for m in MIGRATIONS
        ]

    async def test_close_is_idempotent_and_closed_store_is_unavailable(
        self, backend: Backend
    ) -> None:
        store = backend.new_store()
        await store.start()
        await store.ping()
        await store.close()
        await store.close()
        with pytest.raises(IndexUnavailable) as raised:
            await store.counts()
        assert raised.value.retriable

    async def test_empty_batch(self, store: IndexStore) -> None:
        assert await store.apply_batch([]) == BatchResult(0, 0, 0, 0)


# --- apply_batch semantics -------------------------------------------------------------


class TestJournal:
    async def test_redelivery_is_journaled_once(self, store: IndexStore) -> None:
        created = event(seq=1)
        assert await apply(store, created) == BatchResult(1, 0, 1, 0)
        assert await apply(store, created) == BatchResult(0, 1, 0, 0)
        assert await apply(store, created, created) == BatchResult(0, 2, 0, 0)
        assert (await store.counts())["journal"] == 1

    async def test_duplicate_within_one_batch(self, store: IndexStore) -> None:
        created = event(seq=1)
        assert await apply(store, created, created) == BatchResult(1, 1, 1, 0)

    async def test_records_every_field_and_the_kafka_position(self, store: IndexStore) -> None:
        removed = event(R, seq=2)
        position = KafkaPosition("minio-events", 3, 42)
        await store.apply_batch([(event(seq=1), None), (removed, position)])
        newest, oldest = await store.journal(bucket="bkt", key="user_1/a.ogg")
        assert (newest.event_name, newest.kind, newest.kafka) == (
            "s3:ObjectRemoved:Delete",
            R,
            position,
        )
        assert (newest.event_time, newest.sequencer) == (removed.event_time, removed.sequencer)
        assert (newest.principal_id, newest.source_ip, newest.request_id) == (
            "minioadmin",
            "127.0.0.1",
            "req-2",
        )
        assert (oldest.kafka, oldest.size, oldest.etag) == (None, 100, "etag-1")
        assert newest.id > oldest.id
        assert newest.recorded_at.tzinfo is not None

    async def test_journal_filters_and_limit(self, store: IndexStore) -> None:
        await apply(store, *(event(seq=n, key=f"k{n % 2}") for n in range(1, 7)))
        assert [j.sequencer[-1] for j in await store.journal(key="k1")] == ["5", "3", "1"]
        assert len(await store.journal(bucket="bkt", limit=2)) == 2
        assert await store.journal(bucket="other") == []

    async def test_journal_by_kind(self, store: IndexStore) -> None:
        await apply(
            store,
            event(seq=1, key="a"),
            event(R, seq=2, key="a"),
            event(seq=3, key="b"),
            event(X, seq=4, key="b"),
            event(M, seq=5, key="c"),
        )
        removals = await store.journal(kinds={R, X})
        assert [(j.key, j.kind) for j in removals] == [("b", X), ("a", R)]
        assert [j.key for j in await store.journal(kinds=[M])] == ["c"]
        assert await store.journal(kinds=[]) == []

    async def test_noop_and_other_are_journal_only(self, store: IndexStore) -> None:
        result = await apply(store, event(EventKind.NOOP, seq=1), event(EventKind.OTHER, seq=2))
        assert result == BatchResult(2, 0, 0, 0)
        assert await store.counts() == {"objects": 0, "tombstones": 0, "journal": 2}

    async def test_a_noop_newer_than_a_live_row_tombstones_it(self, store: IndexStore) -> None:
        # Seen on a distributed MinIO around a node's kill (tests/faults/test_minio_cluster.py):
        # a DELETE of a live object answered with NoOP, the object gone all the same.
        await apply(store, event(seq=1))
        older = event(EventKind.NOOP, seq=0, key="user_1/b.ogg")
        await apply(store, event(seq=2, key="user_1/b.ogg"), older)
        result = await apply(store, event(EventKind.NOOP, seq=3))
        assert result.objects_changed == 1
        assert await keys(store) == ["user_1/b.ogg"]  # an older NoOP changed nothing
        assert (await store.counts())["tombstones"] == 1

    async def test_prune_journal(self, store: IndexStore) -> None:
        old = event(seq=1, at=T0 - timedelta(days=10))
        recent = event(seq=2, at=T0 - timedelta(days=1))
        await apply(store, old, recent)
        assert await store.prune_journal(T0 - timedelta(days=5)) == 1
        assert [j.sequencer for j in await store.journal()] == [recent.sequencer]
        assert await store.prune_journal(T0 - timedelta(days=5)) == 0
        # The inventory is not the journal: pruning leaves objects alone.
        assert (await store.counts())["objects"] == 1


class TestObjects:
    async def test_create_indexes_every_field(self, store: IndexStore) -> None:
        created = event(seq=1, metadata={"user-id": "1", "session-type": "interview"})
        await apply(store, created)
        record = await get(store)
        assert (record.size, record.etag, record.content_type, record.user_id) == (
            100,
            "etag-1",
            "audio/ogg",
            "1",
        )
        assert record.metadata == {"user-id": "1", "session-type": "interview"}
        assert record.first_event_time == record.last_event_time == created.event_time
        assert (record.sequencer, record.last_event_name) == (created.sequencer, created.event_name)
        assert not record.deleted
        assert record.deleted_at is None
        assert record.indexed_at.tzinfo is not None
        assert abs(record.indexed_at - datetime.now(UTC)) < timedelta(minutes=5)

    async def test_overwrite_updates_content_and_keeps_first_time(self, store: IndexStore) -> None:
        first = event(seq=1, metadata={"a": "1"})
        second = event(seq=2, size=7, etag="e2", content_type="audio/wav", metadata={"b": "2"})
        assert (await apply(store, first)).objects_changed == 1
        assert (await apply(store, second)).objects_changed == 1
        record = await get(store)
        assert (record.size, record.etag, record.content_type, record.metadata) == (
            7,
            "e2",
            "audio/wav",
            {"b": "2"},
        )
        assert record.first_event_time == first.event_time
        assert record.last_event_time == second.event_time
        assert (await store.counts())["objects"] == 1

    async def test_older_create_after_newer_is_stale(self, store: IndexStore) -> None:
        await apply(store, event(seq=2))
        assert await apply(store, event(seq=1)) == BatchResult(1, 0, 0, 1)
        assert (await get(store)).etag == "etag-2"

    async def test_metadata_change_updates_without_a_new_row(self, store: IndexStore) -> None:
        await apply(store, event(seq=1, metadata={"a": "1"}))
        tagged = event(M, seq=2)
        assert await apply(store, tagged) == BatchResult(1, 0, 1, 0)
        record = await get(store)
        # The tagging event carries no content fields: the stored ones stay.
        assert (record.size, record.etag, record.metadata) == (100, "etag-1", {"a": "1"})
        assert (record.sequencer, record.last_event_name) == (tagged.sequencer, tagged.event_name)
        assert await store.counts() == {"objects": 1, "tombstones": 0, "journal": 2}

    async def test_metadata_change_replaces_metadata_it_carries(self, store: IndexStore) -> None:
        await apply(store, event(seq=1, metadata={"a": "1"}))
        await apply(store, event(M, seq=2, size=5, metadata={"a": "2"}))
        record = await get(store)
        assert (record.size, record.metadata) == (5, {"a": "2"})

    async def test_metadata_change_with_the_writes_sequencer_but_later(
        self, store: IndexStore
    ) -> None:
        created = event(seq=1)
        later = event(M, seq=1, at=created.event_time + timedelta(seconds=3))
        assert (await apply(store, created, later)).objects_changed == 2
        assert (await get(store)).last_event_name == later.event_name

    async def test_metadata_change_of_an_unknown_object_inserts_it(self, store: IndexStore) -> None:
        await apply(store, event(M, seq=3, size=9))
        record = await get(store)
        assert (record.size, record.deleted) == (9, False)

    @pytest.mark.parametrize("kind", [R, X])
    async def test_removal_tombstones(self, store: IndexStore, kind: EventKind) -> None:
        removal = event(kind, seq=2)
        await apply(store, event(seq=1))
        assert await apply(store, removal) == BatchResult(1, 0, 1, 0)
        record = await get(store)
        assert (record.deleted, record.deleted_at) == (True, removal.event_time)
        assert (record.size, record.etag) == (100, "etag-1")  # kept for history
        assert await keys(store) == []
        assert await keys(store, include_deleted=True) == ["user_1/a.ogg"]
        assert await store.counts() == {"objects": 0, "tombstones": 1, "journal": 2}

    async def test_older_create_after_delete_stays_deleted(self, store: IndexStore) -> None:
        await apply(store, event(seq=1), event(R, seq=3))
        assert (await apply(store, event(seq=2))).stale_ignored == 1
        assert (await get(store)).deleted

    async def test_delete_before_create_leaves_a_tombstone(self, store: IndexStore) -> None:
        await apply(store, event(R, seq=5))
        assert (await get(store)).deleted
        assert (await apply(store, event(seq=4))).stale_ignored == 1
        assert (await get(store)).deleted

    async def test_newer_create_revives_a_tombstone(self, store: IndexStore) -> None:
        first = event(seq=1)
        await apply(store, first, event(R, seq=2))
        await apply(store, event(seq=3))
        record = await get(store)
        assert (record.deleted, record.deleted_at, record.etag) == (False, None, "etag-3")
        assert record.first_event_time == first.event_time

    async def test_versions_are_separate_rows(self, store: IndexStore) -> None:
        await apply(store, event(seq=1, version_id="v1"), event(seq=2, version_id="v2"))
        assert [r.version_id for r in await store.list_objects(ObjectQuery())] == ["v1", "v2"]
        assert await store.get_object("bkt", "user_1/a.ogg") is None

    async def test_delete_marker_is_its_own_tombstone(self, store: IndexStore) -> None:
        # The versions behind a delete marker still exist and take space: they stay live.
        marker = event(R, seq=2, version_id="m1", event_name="s3:ObjectRemoved:DeleteMarkerCreated")
        await apply(store, event(seq=1, version_id="v1"), marker)
        assert (await get(store, version_id="m1")).deleted
        assert not (await get(store, version_id="v1")).deleted

    async def test_delete_all_versions_tombstones_every_older_version(
        self, store: IndexStore
    ) -> None:
        versions = [event(seq=n, version_id=f"v{n}") for n in (1, 2)]
        later = event(seq=9, version_id="v9")
        wipe = event(R, seq=5, event_name="s3:ObjectRemoved:DeleteAllVersions")
        assert (await apply(store, *versions, later, wipe)).objects_changed == 6
        deleted = {
            r.version_id: r.deleted
            for r in await store.list_objects(ObjectQuery(include_deleted=True))
        }
        assert deleted == {"": True, "v1": True, "v2": True, "v9": False}

    async def test_shuffled_batch_equals_one_by_one(self, store: IndexStore) -> None:
        story = [
            event(seq=1, metadata={"a": "1"}),
            event(M, seq=2, metadata={"a": "2"}),
            event(R, seq=3),
            event(seq=4, size=44),
            event(M, seq=5),
            event(X, seq=6),
            event(seq=7, size=77, metadata={"c": "3"}),
            event(M, seq=7, at=T0 + timedelta(seconds=8)),
            event(seq=1, key="other"),
            event(R, seq=2, key="other"),
        ]
        one_by_one = [0, 0, 0, 0]
        for e in story:
            result = await apply(store, in_bucket(e, "serial"))
            one_by_one = [
                a + b for a, b in zip(one_by_one, dataclasses.astuple(result), strict=True)
            ]
        for seed in range(3):
            shuffled = [in_bucket(e, f"batch{seed}") for e in story]
            random.Random(seed).shuffle(shuffled)
            assert list(dataclasses.astuple(await apply(store, *shuffled))) == one_by_one
        serial = await snapshot(store, "serial")
        for seed in range(3):
            assert await snapshot(store, f"batch{seed}") == serial
        assert [(r.key, r.deleted, r.size) for r in serial] == [
            ("other", True, 100),  # a tombstone keeps the last known size
            ("user_1/a.ogg", False, 77),
        ]

    async def test_a_batch_of_many_statements_equals_small_batches(self, store: IndexStore) -> None:
        # 1,337 events: more than one statement's worth of rows (SQLite writes a batch in
        # multi-row slices of at most 512, the rest in power-of-two slices), with
        # duplicates inside the batch, events journaled before, overwrites and removals.
        story = [event(seq=n, key=f"k{n % 400:03}", size=n) for n in range(1, 1001)]
        story += [event(R, seq=n, key=f"k{n % 400:03}") for n in range(1001, 1101)]
        story += story[:137]  # journaled before (first batch) and repeated in the batch
        for bucket in ("big", "small"):
            await apply(store, *(in_bucket(e, bucket) for e in story[:300]))
        small = [0, 0, 0, 0]
        for start in range(0, len(story), 100):
            chunk = [in_bucket(e, "small") for e in story[start : start + 100]]
            result = dataclasses.astuple(await apply(store, *chunk))
            small = [a + b for a, b in zip(small, result, strict=True)]
        big = await apply(store, *(in_bucket(e, "big") for e in story))
        assert list(dataclasses.astuple(big)) == small
        assert big.journaled == len(story) - 137 - 300
        assert await snapshot(store, "big") == await snapshot(store, "small")
        live = [r for r in await snapshot(store, "big") if not r.deleted]
        assert len(live) == 300  # keys k000..k399; the removals (seq 1001..1100) hit 100

    async def test_unicode_spaces_and_plus_in_keys(self, store: IndexStore) -> None:
        odd = ["юникод/голос 1.ogg", "with space/a+b.wav", "percent%25/100%.mp3", "🎙 memo.ogg"]
        await apply(store, *(event(seq=n, key=k) for n, k in enumerate(odd, start=1)))
        for key in odd:
            assert (await get(store, key)).key == key
        assert await keys(store, prefix="юникод/") == ["юникод/голос 1.ogg"]
        assert await keys(store, prefix="with space/a+") == ["with space/a+b.wav"]
        assert sorted(await keys(store)) == await keys(store)
        assert await keys(store) == sorted(odd, key=lambda k: k.encode())


def in_bucket(e: ObjectEvent, bucket: str) -> ObjectEvent:
    return e.model_copy(update={"bucket": bucket})


async def snapshot(store: IndexStore, bucket: str) -> list[ObjectRecord]:
    """Rows of ``bucket`` without what legitimately differs: bucket name and indexed_at."""
    rows = await store.list_objects(ObjectQuery(bucket=bucket, include_deleted=True))
    return [dataclasses.replace(r, bucket="", indexed_at=T0) for r in rows]


# --- queries -----------------------------------------------------------------------------


class TestQueries:
    async def test_list_by_bucket_and_user(self, store: IndexStore) -> None:
        await apply(
            store,
            event(seq=1, bucket="b1", key="user_1/x", user_id="1"),
            event(seq=2, bucket="b1", key="user_2/y", user_id="2"),
            event(seq=3, bucket="b2", key="user_1/z", user_id="1"),
            event(seq=4, bucket="b2", key="loose", user_id=None),
        )
        assert await keys(store, bucket="b1") == ["user_1/x", "user_2/y"]
        assert await keys(store, user_id="1") == ["user_1/x", "user_1/z"]
        assert await keys(store, bucket="b2", user_id="1") == ["user_1/z"]
        assert [(r.bucket, r.key) for r in await store.list_objects(ObjectQuery())] == [
            ("b1", "user_1/x"),
            ("b1", "user_2/y"),
            ("b2", "loose"),
            ("b2", "user_1/z"),
        ]

    async def test_prefix_is_literal_and_case_sensitive(self, store: IndexStore) -> None:
        names = ["a%b/1", "a_b/1", "axb/1", "a%bc", "A%b/2", "a\\b/1"]
        await apply(store, *(event(seq=n, key=k) for n, k in enumerate(names, start=1)))
        assert await keys(store, prefix="a%b") == ["a%b/1", "a%bc"]
        assert await keys(store, prefix="a_b") == ["a_b/1"]
        assert await keys(store, prefix="a\\") == ["a\\b/1"]
        assert await keys(store, prefix="A") == ["A%b/2"]
        assert await keys(store, prefix="a%b/") == ["a%b/1"]
        assert await keys(store, prefix="zz") == []

    async def test_metadata_search(self, store: IndexStore) -> None:
        await apply(
            store,
            event(seq=1, key="k1", metadata={"session-type": "interview", "lang": "ru"}),
            event(seq=2, key="k2", metadata={"session-type": "interview", "lang": "en"}),
            event(seq=3, key="k3", metadata={"session-type": "design"}),
            event(seq=4, key="k4"),
        )
        assert await keys(store, metadata={"session-type": "interview"}) == ["k1", "k2"]
        assert await keys(store, metadata={"Session-Type": "interview", "lang": "en"}) == ["k2"]
        assert await keys(store, metadata={"session-type": "INTERVIEW"}) == []
        assert await keys(store, metadata={"missing": "x"}) == []

    async def test_keyset_pagination(self, store: IndexStore) -> None:
        events = [
            event(seq=n, bucket=f"b{n % 2}", key=f"k{n % 5}", version_id=f"v{n}")
            for n in range(1, 26)
        ]
        await apply(store, *events)
        everything = await store.list_objects(ObjectQuery())
        pages: list[list[ObjectRecord]] = []
        after = None
        while page := await store.list_objects(ObjectQuery(limit=10, after=after)):
            pages.append(page)
            after = (page[-1].bucket, page[-1].key, page[-1].version_id)
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [r for p in pages for r in p] == everything
        assert len(everything) == 25

    async def test_created_before_looks_at_the_first_event(self, store: IndexStore) -> None:
        await apply(store, event(seq=10, key="old"), event(seq=20, key="new"))
        # An overwrite keeps the row's first event time: still "created" at 10 s.
        await apply(store, event(seq=30, key="old"))
        cutoff = T0 + timedelta(seconds=15)
        assert await keys(store, created_before=cutoff) == ["old"]
        assert await keys(store, created_before=T0 + timedelta(seconds=10)) == []
        assert await keys(store, created_before=T0 + timedelta(hours=1)) == ["new", "old"]

    async def test_limit_must_be_positive(self, store: IndexStore) -> None:
        with pytest.raises(InvalidInput):
            await store.list_objects(ObjectQuery(limit=0))

    async def test_usage_counts_live_objects_only(self, store: IndexStore) -> None:
        await apply(
            store,
            event(seq=1, bucket="b1", key="a", user_id="1", size=10),
            event(seq=2, bucket="b1", key="b", user_id="1", size=20),
            event(seq=3, bucket="b2", key="c", user_id="2", size=5),
            event(seq=4, bucket="b2", key="d", user_id=None, size=1),
            event(seq=5, bucket="b2", key="gone", user_id="2", size=1000),
            event(R, seq=6, bucket="b2", key="gone", user_id="2"),
        )
        assert await store.usage(by="user") == [
            UsageRow("1", 2, 30, 2, 30),
            UsageRow("2", 1, 5, 1, 5),
            UsageRow(None, 1, 1, 1, 1),
        ]
        assert await store.usage(by="bucket") == [
            UsageRow("b1", 2, 30, 2, 30),
            UsageRow("b2", 2, 6, 2, 6),
        ]

    async def test_usage_of_an_empty_index(self, store: IndexStore) -> None:
        assert await store.usage(by="user") == []

    async def test_counts(self, store: IndexStore) -> None:
        assert await store.counts() == {"objects": 0, "tombstones": 0, "journal": 0}
        await apply(store, event(seq=1, key="a"), event(seq=2, key="b"), event(R, seq=3, key="b"))
        assert await store.counts() == {"objects": 1, "tombstones": 1, "journal": 3}


# --- processing jobs ---------------------------------------------------------------------


def job(seq: int, key: str = "user_1/a.ogg", processor: str = "audio-probe") -> JobRequest:
    return JobRequest("bkt", key, "", processor, f"{seq:X}", f"etag-{seq}", 100)


A = Lease("host-a:1:aaaa", 60.0)
B = Lease("host-b:2:bbbb", 60.0)


async def run_to_end(store: IndexStore, request: JobRequest, outcome: JobOutcome) -> None:
    assert (await store.claim_jobs([request], A)).run == [request]
    await store.start_job(request, A.owner)
    assert await store.finish_job(request, outcome, A.owner)


class TestJobs:
    async def test_lifecycle_pending_running_done(self, store: IndexStore) -> None:
        await apply(store, event(seq=1))
        request = job(1)
        assert await store.claim_jobs([request], A) == Claims(run=[request], held=[])
        assert (await get(store)).processing_status == "pending"
        assert await store.start_job(request, A.owner) == 1
        assert (await get(store)).processing_status == "running"
        outcome = JobOutcome(JobStatus.DONE, 12, result_bucket="res", result_key="k.json")
        assert await store.finish_job(request, outcome, A.owner)
        (record,) = await store.jobs(bucket="bkt")
        assert (record.status, record.attempts, record.duration_ms) == (JobStatus.DONE, 1, 12)
        assert (record.result_bucket, record.result_key) == ("res", "k.json")
        assert record.finished_at is not None
        assert (record.lease_owner, record.lease_expires_at) == (A.owner, None)
        assert (await get(store)).processing_status == "done"
        assert await keys(store, processing_status="done") == ["user_1/a.ogg"]
        assert await keys(store, processing_status="failed") == []

    async def test_a_finished_job_is_not_claimed_again(self, store: IndexStore) -> None:
        request = job(1)
        await run_to_end(store, request, JobOutcome(JobStatus.FAILED, 3, error="corrupt"))
        assert await store.claim_jobs([request], B) == Claims(run=[], held=[])
        (record,) = await store.jobs(status=JobStatus.FAILED)
        assert record.last_error == "corrupt"

    async def test_a_live_lease_holds_the_job_for_its_runner(self, store: IndexStore) -> None:
        request = job(1)
        await store.claim_jobs([request], A)
        await store.start_job(request, A.owner)
        # Another process receives the same event (a rebalance moved the partition): it
        # waits, and so does the runner itself when the event comes back to it.
        assert await store.claim_jobs([request], B) == Claims(run=[], held=[request])
        assert await store.claim_jobs([request], A) == Claims(run=[], held=[request])
        with pytest.raises(LeaseLost):
            await store.start_job(request, B.owner)
        assert not await store.finish_job(request, JobOutcome(JobStatus.DONE, 1), B.owner)
        (record,) = await store.jobs()
        assert (record.status, record.lease_owner) == (JobStatus.RUNNING, A.owner)
        assert record.lease_expires_at is not None

    async def test_an_expired_lease_is_taken_over_with_its_attempts(
        self, store: IndexStore
    ) -> None:
        request = job(1)
        short = Lease(A.owner, 0.2)
        await store.claim_jobs([request], short)
        await store.start_job(request, A.owner)  # the process dies here
        await asyncio.sleep(0.4)
        assert await store.claim_jobs([request], B) == Claims(run=[request], held=[])
        assert await store.start_job(request, B.owner) == 2
        # The old runner, were it still alive, can no longer record anything.
        with pytest.raises(LeaseLost):
            await store.start_job(request, A.owner)
        assert not await store.finish_job(request, JobOutcome(JobStatus.DONE, 1), A.owner)
        assert await store.finish_job(request, JobOutcome(JobStatus.DONE, 1), B.owner)
        (record,) = await store.jobs()
        assert (record.status, record.attempts, record.lease_owner) == (JobStatus.DONE, 2, B.owner)

    async def test_renewal_keeps_a_lease_live_and_a_zero_lease_lets_go(
        self, store: IndexStore
    ) -> None:
        running, done = job(1, key="a"), job(1, key="b")
        short = Lease(A.owner, 0.5)
        await store.claim_jobs([running, done], short)
        await store.start_job(done, A.owner)
        await store.finish_job(done, JobOutcome(JobStatus.DONE, 1), A.owner)
        await asyncio.sleep(0.3)
        assert await store.renew_leases(short) == 1  # only the unfinished job
        await asyncio.sleep(0.3)
        assert await store.claim_jobs([running], B) == Claims(run=[], held=[running])
        assert await store.renew_leases(Lease(A.owner, 0.0)) == 1  # released on shutdown
        assert await store.claim_jobs([running], B) == Claims(run=[running], held=[])
        assert await store.renew_leases(short) == 0  # no longer A's

    async def test_a_job_listed_twice_is_claimed_once(self, store: IndexStore) -> None:
        older, newer = job(1), job(2)
        claims = await store.claim_jobs([older, newer, older], A)
        assert claims == Claims(run=[newer], held=[])
        (record,) = await store.jobs()
        assert record.sequencer == "2"

    async def test_a_pending_row_without_a_lease_is_taken(self, store: IndexStore) -> None:
        request = job(1)
        await store.claim_jobs([request], Lease(A.owner, 0.0))  # as older consumers left it
        assert await store.claim_jobs([request], B) == Claims(run=[request], held=[])

    async def test_new_content_restarts_and_old_content_is_skipped(self, store: IndexStore) -> None:
        first, second = job(1), job(2)
        await run_to_end(store, first, JobOutcome(JobStatus.FAILED, 1, error="boom"))
        assert await store.claim_jobs([second, first], B) == Claims(run=[second], held=[])
        (record,) = await store.jobs()
        assert (record.sequencer, record.attempts, record.last_error) == ("2", 0, None)
        assert (record.status, record.lease_owner) == (JobStatus.PENDING, B.owner)

    async def test_one_write_announced_twice_is_one_job(self, store: IndexStore) -> None:
        # The reconcile's repair (its Last-Modified) first, then MinIO's own event of the
        # same bytes with a greater sequencer: the second waits, takes the job over with its
        # attempts once the lease expired, and is skipped once the job is done.
        repaired = job(1)
        announced, again = (dataclasses.replace(job(n), etag=repaired.etag) for n in (2, 3))
        short = Lease(A.owner, 0.3)
        await store.claim_jobs([repaired], short)
        await store.start_job(repaired, A.owner)
        assert await store.claim_jobs([announced], B) == Claims(run=[], held=[announced])
        await asyncio.sleep(0.5)  # the runner died
        assert await store.claim_jobs([announced], B) == Claims(run=[announced], held=[])
        assert await store.start_job(announced, B.owner) == 2
        assert await store.finish_job(announced, JobOutcome(JobStatus.DONE, 1), B.owner)
        assert await store.claim_jobs([announced], A) == Claims(run=[], held=[])
        assert await store.claim_jobs([again], A) == Claims(run=[], held=[])
        (record,) = await store.jobs()
        assert (record.sequencer, record.attempts, record.status) == ("2", 2, JobStatus.DONE)

    async def test_new_content_is_claimed_while_old_content_runs(self, store: IndexStore) -> None:
        first, second = job(1), job(2)
        await store.claim_jobs([first], A)
        await store.start_job(first, A.owner)
        assert await store.claim_jobs([second], B) == Claims(run=[second], held=[])
        # The old content's runner ends too late: its outcome is not recorded.
        assert not await store.finish_job(first, JobOutcome(JobStatus.DONE, 1), A.owner)

    async def test_the_worst_job_status_summarises_an_object(self, store: IndexStore) -> None:
        await apply(store, event(seq=1))
        probe, transcribe = job(1), job(1, processor="transcribe")
        await store.claim_jobs([probe, transcribe], A)
        await store.start_job(probe, A.owner)
        await store.finish_job(probe, JobOutcome(JobStatus.DONE, 1), A.owner)
        assert (await get(store)).processing_status == "pending"
        await store.start_job(transcribe, A.owner)
        await store.finish_job(transcribe, JobOutcome(JobStatus.FAILED, 1, error="429"), A.owner)
        assert (await get(store)).processing_status == "failed"
        assert [j.processor for j in await store.jobs(key="user_1/a.ogg")] == [
            "audio-probe",
            "transcribe",
        ]
