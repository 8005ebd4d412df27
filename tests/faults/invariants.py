"""What must hold after any fault, checked the same way by every scenario.

One function per invariant; each reads the real systems (MinIO, Kafka, the index) and
fails with a message that says which object, event, job or message is wrong:

- ``uploads_landed``: the bucket holds what the uploader's acknowledged requests wrote;
- ``index_matches_bucket``: the index's live rows equal MinIO's listing (key, version id,
  size, etag);
- ``journal_holds_each_event_once``: every event MinIO published about the bucket is
  journaled, none twice, nothing else;
- ``jobs_ended_once``: every object the rules cover has one job per processor, ended
  (done), for its current content, and its result was written once per attempt;
- ``dlq_holds_exactly``: the DLQ holds the poison messages, each once, and nothing else.

``check_all`` runs them in that order.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from minio import Minio

from consumer.events import RECONCILE_GONE
from consumer.index import IndexStore, JobStatus, ObjectQuery
from tests.faults.harness import Op, RawRecord, bucket_of, expected_objects, read_range
from tests.helpers import Listing, bucket_listing

EventId = tuple[str, str, str, int]  # (key, version id, event name, sequencer as a number)


def _differences(label_a: str, a: set[object], label_b: str, b: set[object]) -> str:
    only_a, only_b = sorted(a - b, key=repr), sorted(b - a, key=repr)
    return (
        f"{len(only_a)} only in {label_a} (first: {only_a[:5]}), "
        f"{len(only_b)} only in {label_b} (first: {only_b[:5]})"
    )


def uploads_landed(
    minio: Minio, bucket: str, done: Sequence[Op], unsettled: frozenset[str] = frozenset()
) -> None:
    """The bucket's latest objects are what the acknowledged uploads and deletes left.
    ``unsettled`` keys are left out: a request of theirs failed with its outcome unknown
    (a node killed under it), so MinIO may still apply it later (its healing); the index
    is held against the bucket for them all the same."""
    expected = {
        (k, "", size, etag)
        for k, (size, etag) in expected_objects(done).items()
        if k not in unsettled
    }
    actual = {
        row for row in bucket_listing(minio, bucket, versions=False) if row[0] not in unsettled
    }
    assert actual == expected, "bucket differs from the acknowledged uploads: " + _differences(
        "the bucket", set(actual), "the uploads", set(expected)
    )


async def index_rows(store: IndexStore, bucket: str) -> Listing:
    """The index's live rows of ``bucket`` (every page)."""
    rows: Listing = set()
    after: tuple[str, str, str] | None = None
    while True:
        page = await store.list_objects(ObjectQuery(bucket=bucket, limit=1000, after=after))
        rows |= {(r.key, r.version_id, r.size or 0, r.etag or "") for r in page}
        if len(page) < 1000:
            return rows
        last = page[-1]
        after = (last.bucket, last.key, last.version_id)


async def index_matches_bucket(
    store: IndexStore, minio: Minio, bucket: str, *, versioned: bool
) -> None:
    listing = bucket_listing(minio, bucket, versions=versioned)
    indexed = await index_rows(store, bucket)
    assert indexed == listing, "index differs from the bucket: " + _differences(
        "the index", set(indexed), "the bucket", set(listing)
    )


@dataclass(frozen=True)
class PublishedEvent:
    """One event MinIO put on the topic (read back, not through the consumer's parser)."""

    key: str
    version_id: str
    name: str
    sequencer: int
    size: int
    etag: str

    @property
    def ident(self) -> EventId:
        return (self.key, self.version_id, self.name, self.sequencer)


def published_events(
    records: Iterable[RawRecord], bucket: str, *, not_events: Iterable[tuple[int, int]] = ()
) -> list[PublishedEvent]:
    """MinIO's events about ``bucket`` among ``records`` (copies and MinIO's own
    redeliveries included); ``not_events`` are positions of messages the test produced
    as poison, left out."""
    skip = set(not_events)
    found: list[PublishedEvent] = []
    for record in records:
        if bucket_of(record) != bucket or (record.partition, record.offset) in skip:
            continue
        assert record.value is not None, f"an empty message at {record.partition}/{record.offset}"
        document = json.loads(record.value)
        event = document["Records"][0]
        obj = event["s3"]["object"]
        version = obj.get("versionId") or ""
        found.append(
            PublishedEvent(
                key=document["Key"].split("/", 1)[1],
                version_id="" if version == "null" else version,
                name=event["eventName"],
                sequencer=int(obj["sequencer"], 16),
                size=int(obj.get("size") or 0),
                etag=str(obj.get("eTag") or ""),
            )
        )
    return found


def state_from_events(events: Iterable[PublishedEvent]) -> Listing:
    """What an unversioned bucket holds according to its published events: per key, the
    event with the highest sequencer, if it created content."""
    latest: dict[str, PublishedEvent] = {}
    for event in events:
        if event.key not in latest or event.sequencer > latest[event.key].sequencer:
            latest[event.key] = event
    return {
        (e.key, "", e.size, e.etag)
        for e in latest.values()
        if e.name.startswith("s3:ObjectCreated:")
    }


def events_lost_by_minio(
    minio: Minio, bucket: str, events: Sequence[PublishedEvent], *, allowed: int
) -> Listing:
    """The bucket's objects (or deletions) no published event tells of: MinIO lost the
    event of a request in flight when it stopped (minio/minio#18404, "working as
    intended"; only a reconcile against the listing repairs it). At most ``allowed``
    (the requests in flight at the stop); returns them for the other checks."""
    listing = bucket_listing(minio, bucket, versions=False)
    implied = state_from_events(events)
    lost = listing ^ implied
    assert len({row[0] for row in lost}) <= allowed, (
        "MinIO published no event for more writes than were in flight at its stop: "
        + _differences("the bucket", set(listing), "the events", set(implied))
    )
    if lost:
        print(f"MinIO lost the events of {sorted(lost)} (stopped mid-request)")
    return lost


async def index_matches_events(
    store: IndexStore, bucket: str, events: Sequence[PublishedEvent]
) -> None:
    """The index holds what the published events say (an unversioned bucket)."""
    implied = state_from_events(events)
    indexed = await index_rows(store, bucket)
    assert indexed == implied, "index differs from the published events: " + _differences(
        "the index", set(indexed), "the events", set(implied)
    )


async def journal_holds_each_event_once(
    store: IndexStore, bucket: str, events: Sequence[PublishedEvent]
) -> None:
    published = [event.ident for event in events]
    journal = await store.journal(bucket=bucket, limit=100_000)
    # A reconcile's tombstone (an object gone whose removal MinIO never published) is
    # journaled but not published: nothing is left to process. The index check covers it.
    journaled = [
        (j.key, j.version_id, j.event_name, int(j.sequencer, 16))
        for j in journal
        if j.event_name != RECONCILE_GONE
    ]
    twice = [ident for ident, n in Counter(journaled).items() if n > 1]
    assert not twice, f"{len(twice)} events journaled more than once, e.g. {twice[:5]}"
    assert published, "no event of the bucket was published: the check would be empty"
    assert set(journaled) == set(published), "journal differs from the published events: " + (
        _differences("the journal", set(journaled), "Kafka", set(published))
    )


@dataclass(frozen=True)
class Processing:
    """What the processing rules should have started: ``processors`` on every audio
    object of the bucket; results land (versioned) in ``results_bucket``."""

    results_bucket: str
    processors: tuple[str, ...] = ("audio-probe",)


def _result_versions(minio: Minio, bucket: str) -> dict[str, list[dict[str, object]]]:
    """Result key → its stored documents, oldest version first (S3 lists a key's
    versions newest first)."""
    by_key: dict[str, list[str | None]] = {}
    for obj in minio.list_objects(bucket, recursive=True, include_version=True):
        by_key.setdefault(obj.object_name or "", []).append(obj.version_id)
    documents: dict[str, list[dict[str, object]]] = {}
    for key, versions in by_key.items():
        for version in reversed(versions):
            response = minio.get_object(bucket, key, version_id=version)
            try:
                documents.setdefault(key, []).append(json.loads(response.read()))
            finally:
                response.close()
                response.release_conn()
    return documents


async def jobs_ended_once(
    store: IndexStore,
    minio: Minio,
    bucket: str,
    audio_keys: set[str],
    processing: Processing,
    *,
    crashes: bool,
) -> None:
    """Each audio object has exactly one job per processor, done, for the content the
    index holds; no job is pending, running or failed. A result is stored once per
    attempt that got that far: exactly once without crashes, and at most ``attempts``
    times with them (a kill between storing the result and marking the job done makes
    the rerun store it again), the last copy written by the job's last attempt."""
    jobs = await store.jobs(bucket=bucket, limit=100_000)
    unfinished = [(j.key, j.processor, j.status.value) for j in jobs if j.status != JobStatus.DONE]
    assert not unfinished, f"{len(unfinished)} jobs not done, e.g. {unfinished[:5]}"
    expected = {(key, p) for key in audio_keys for p in processing.processors}
    actual = Counter((j.key, j.processor) for j in jobs)
    assert set(actual) == expected, "jobs differ from the audio objects: " + _differences(
        "the jobs", set(actual), "the objects", set(expected)
    )
    rows = {r.key: r for r in await store.list_objects(ObjectQuery(bucket=bucket, limit=100_000))}
    results = _result_versions(minio, processing.results_bucket)
    for job in jobs:
        # Of the row's content; started by this write's first announcement, which may be
        # the reconcile's repair (its Last-Modified) before MinIO's own, later sequencer.
        row = rows[job.key]
        assert (job.etag, job.sequencer <= row.sequencer) == (row.etag, True), (
            f"job of stale content: {job}"
        )
        assert job.result_key is not None, f"done without a result: {job}"
        documents = results.get(job.result_key, [])
        limit = job.attempts if crashes else 1
        assert 1 <= len(documents) <= limit, (
            f"{job.key} {job.processor}: {len(documents)} results stored for"
            f" {job.attempts} attempt(s) (crashes: {crashes})"
        )
        last = documents[-1]
        assert last["attempt"] == job.attempts, f"{job.key}: a later attempt than the result's"
        source = last["source"]
        assert isinstance(source, dict)
        assert (source["etag"], source["sequencer"]) == (job.etag, job.sequencer), job.key
    assert set(results) == {j.result_key for j in jobs}, "results without a job"


@dataclass(frozen=True)
class Poison:
    """A message the test produced that must end in the DLQ, where it was produced."""

    partition: int
    offset: int
    key: bytes
    value: bytes


async def dlq_holds_exactly(
    bootstrap: str, dlq_topic: str, poison: Sequence[Poison], *, indexer_group: str
) -> None:
    letters = await read_range(bootstrap, dlq_topic)
    produced = Counter((p.partition, p.offset, p.key, p.value) for p in poison)
    found = Counter(
        (
            int(letter.headers["x-original-partition"]),
            int(letter.headers["x-original-offset"]),
            letter.key,
            letter.value or b"",
        )
        for letter in letters
    )
    extra, missing = found - produced, produced - found
    assert not extra, (
        f"DLQ holds {sum(extra.values())} letters that are not the test's poison"
        f" (first: {list(extra)[:3]})"
    )
    assert not missing, (
        f"{sum(missing.values())} of {len(poison)} poison messages are not in the DLQ"
        f" (first: {list(missing)[:3]})"
    )
    groups = {letter.headers["x-consumer-group"].decode() for letter in letters}
    assert groups <= {indexer_group}, f"letters from other groups: {groups}"


async def check_all(
    *,
    store: IndexStore,
    minio: Minio,
    bootstrap: str,
    events_topic: str,
    start: Mapping[int, int],
    bucket: str,
    versioned: bool,
    done: Sequence[Op],
    processing: Processing,
    dlq_topic: str,
    indexer_group: str,
    poison: Sequence[Poison] = (),
    crashes: bool = False,
    minio_may_lose: int = 0,
    unsettled: frozenset[str] = frozenset(),
) -> Listing:
    """Every invariant, after the consumer has drained and stopped. With
    ``minio_may_lose`` > 0 (MinIO was stopped mid-request), up to that many objects may
    lack their event; the index must then equal what the published events say.
    Returns those objects."""
    uploads_landed(minio, bucket, done, unsettled)
    records = await read_range(bootstrap, events_topic, start)
    poisoned = [(p.partition, p.offset) for p in poison]
    published = published_events(records, bucket, not_events=poisoned)
    latest = bucket_listing(minio, bucket, versions=False)
    if minio_may_lose:
        assert not versioned, "the events' state is computed for unversioned buckets"
        lost = events_lost_by_minio(minio, bucket, published, allowed=minio_may_lose)
        await index_matches_events(store, bucket, published)
        latest = state_from_events(published)
    else:
        lost = set()
        await index_matches_bucket(store, minio, bucket, versioned=versioned)
    await journal_holds_each_event_once(store, bucket, published)
    audio = {key for key, *_ in latest if key.endswith(".wav")}
    await jobs_ended_once(store, minio, bucket, audio, processing, crashes=crashes)
    await dlq_holds_exactly(bootstrap, dlq_topic, poison, indexer_group=indexer_group)
    print(
        f"invariants hold: {len(done)} acknowledged requests, {len(latest)} objects,"
        f" {len(published)} events published ({len({e.ident for e in published})} distinct),"
        f" {len(audio)} jobs per processor, {len(poison)} poison messages,"
        f" {len(lost)} events lost by MinIO"
    )
    return lost
