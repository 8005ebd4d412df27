"""The metadata index: its Protocol, its records, and the pure rules every backend follows.

Nothing here does I/O. ``decide`` says what one event does to one stored row;
``order_for_apply`` puts a batch in the order those decisions must be taken;
``plan_objects`` takes them, in memory, against the rows the batch touches; ``run_batch``
drives a backend's ``BatchWriter`` (journal the new events, load the rows they touch, save
the changed rows: a few set-wise statements per batch) inside the backend's transaction.
Both backends (sqlite.py, postgres.py) only translate these steps into SQL, so they cannot
disagree about semantics.

Ordering: an event is newer than a stored row when its sequencer is greater (numerically;
sequencers are normalised to fixed-width hex so string order is numeric order). Equal
sequencers are broken by ``event_time`` — MinIO can give a tagging change the sequencer of
the write it tags — and an event equal in both is not newer, so a redelivery never wins
over itself. A missing sequencer ("") is older than any real one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Final, Literal, Protocol, Self, TypeVar

import msgspec

from consumer.errors import ConnectionFailed, ConsumerError, InvalidInput
from consumer.events import (
    RECONCILE_FOUND,
    RECONCILE_GONE,
    EventKind,
    ObjectEvent,
    removes_object,
    writes_content,
)

# MinIO's force-delete of a key removes every version at once (see sweeps_other_versions).
DELETE_ALL_VERSIONS: Final = "s3:ObjectRemoved:DeleteAllVersions"
# A DELETE without a version id in a versioned bucket: a marker hides the key, the
# versions behind it stay stored (see ObjectRecord.is_delete_marker).
DELETE_MARKER_CREATED: Final = "s3:ObjectRemoved:DeleteMarkerCreated"
LIKE_ESCAPE: Final = "\\"
T = TypeVar("T")


# --- errors ----------------------------------------------------------------------------


class IndexUnavailable(ConnectionFailed):
    """The index database cannot be reached or is locked right now; retrying may work."""


class IndexWriteFailed(ConsumerError):
    """The index refused a read or write for a reason retrying cannot fix.

    Examples: a corrupt SQLite file, a schema newer than this consumer, bad credentials.
    """


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaPosition:
    """Where an event was read from; stored in the journal for tracing and replay."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class BatchResult:
    """What one ``apply_batch`` did; counts sum to the batch size as described per field."""

    journaled: int  # events newly written to the journal
    duplicates: int  # events already journaled (redeliveries): skipped entirely
    objects_changed: int  # rows of ``objects`` inserted or updated
    stale_ignored: int  # journaled, but older than (or equal to) the stored row


@dataclass(frozen=True)
class ObjectRecord:
    """One row of the live inventory (or a tombstone when ``deleted``). Times are UTC."""

    bucket: str
    key: str
    version_id: str
    size: int | None
    etag: str | None
    content_type: str | None
    user_id: str | None
    metadata: dict[str, str]
    first_event_time: datetime
    last_event_time: datetime
    sequencer: str
    indexed_at: datetime
    deleted: bool
    last_event_name: str = ""
    deleted_at: datetime | None = None
    # The processing jobs of this row summed up (see PROCESSING_STATUS_SQL); None: no job.
    processing_status: str | None = None
    # Listings with Versions.CURRENT / Versions.ALL: whether this is the key's latest
    # version (a delete marker can be); None from other reads.
    is_latest: bool | None = None
    # Listings with ``text=``: the matching part of the transcript, hits in [brackets].
    snippet: str | None = None

    @property
    def is_delete_marker(self) -> bool:
        """A delete marker: a removal that hides the key but leaves its versions stored."""
        return self.deleted and self.last_event_name == DELETE_MARKER_CREATED

    @property
    def is_gone(self) -> bool:
        """A removed version (or key): nothing of it is stored any more."""
        return self.deleted and not self.is_delete_marker


class Versions(StrEnum):
    """Which rows a listing shows.

    ROWS: every live row, each stored version of a key counted (what the indexer,
    reconcile and retention work on). CURRENT: what S3's ListObjectsV2 shows — per key
    its latest version, and nothing when that is a delete marker. ALL: what
    ListObjectVersions shows — every stored version and every delete marker, with
    ``is_latest``.
    """

    ROWS = "rows"
    CURRENT = "current"
    ALL = "all"


@dataclass(frozen=True)
class JournalRecord:
    """One journaled event. ``kafka`` is None for events that did not come from Kafka."""

    id: int
    bucket: str
    key: str
    version_id: str
    event_name: str
    kind: EventKind
    event_time: datetime
    sequencer: str
    principal_id: str | None
    source_ip: str | None
    user_agent: str | None
    request_id: str | None
    size: int | None
    etag: str | None
    kafka: KafkaPosition | None
    recorded_at: datetime


class JobStatus(StrEnum):
    """pending → running → done | failed, per (object version, processor)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED)


@dataclass(frozen=True)
class JobRequest:
    """One processor to run on the content an event created.

    In an unversioned bucket one key holds successive contents under version_id ""; the
    event's sequencer tells them apart, so a job is for (row, processor) at a sequencer.
    """

    bucket: str
    key: str
    version_id: str
    processor: str
    sequencer: str
    etag: str | None
    size: int | None

    @property
    def ident(self) -> tuple[str, str, str, str]:
        return (self.bucket, self.key, self.version_id, self.processor)


@dataclass(frozen=True)
class JobRecord:
    """A row of ``jobs``: the latest job of one processor on one object (version)."""

    bucket: str
    key: str
    version_id: str
    processor: str
    sequencer: str
    etag: str | None
    status: JobStatus
    attempts: int
    last_error: str | None
    result_bucket: str | None
    result_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    updated_at: datetime
    # Who runs (or last ran) the job, and until when its lease holds unless renewed.
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    @property
    def ident(self) -> tuple[str, str, str, str]:
        return (self.bucket, self.key, self.version_id, self.processor)


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: ``finish_job``'s input."""

    status: JobStatus
    duration_ms: int
    error: str | None = None
    result_bucket: str | None = None
    result_key: str | None = None


def job_should_run(stored: JobRecord | None, request: JobRequest) -> bool:
    """Whether to (re)run a requested job, given the stored one.

    A job for newer content always runs; for older content never (the newer content's job
    supersedes it). For the same content a finished job is not run again (a redelivered
    event), while a pending or running one is: its process died before finishing it.
    """
    if stored is None:
        return True
    if request.sequencer != stored.sequencer:
        return request.sequencer > stored.sequencer
    return not stored.status.finished


class ClaimDecision(StrEnum):
    RUN = "run"  # the claimer takes the job (and its lease) now
    WAIT = "wait"  # a live lease holds it: its runner is at work; ask again later
    SKIP = "skip"  # finished for this content, or superseded by newer content


def claim_decision(
    stored: JobRecord | None, request: JobRequest, *, now: datetime
) -> ClaimDecision:
    """What a processor does with a job it was asked to run, given the stored one. Pure.

    Content first (``job_should_run``). An unfinished job of the same content is running
    somewhere while its lease is live — in another process, or in this one when the event
    is redelivered after a rebalance — so it is waited for, never run twice; once the lease
    expired (its runner died) it is taken over. A pending row without a lease (written by
    an older consumer) is taken at once.
    """
    if not job_should_run(stored, request):
        return ClaimDecision.SKIP
    if stored is None or stored.sequencer != request.sequencer:
        return ClaimDecision.RUN
    if stored.lease_expires_at is not None and stored.lease_expires_at > now:
        return ClaimDecision.WAIT
    return ClaimDecision.RUN


def latest_requests(requests: Sequence[JobRequest]) -> list[JobRequest]:
    """One request per job (object version, processor): the one for the newest content,
    in the order of first appearance. A batch can hold an event twice (redelivery) or two
    writes of one key; a job must not be claimed twice in one statement. Pure."""
    latest: dict[tuple[str, str, str, str], JobRequest] = {}
    for request in requests:
        seen = latest.get(request.ident)
        if seen is None or request.sequencer > seen.sequencer:
            latest[request.ident] = request
    return list(latest.values())


@dataclass(frozen=True)
class Lease:
    """A claimer's hold on the jobs it runs: renewed while they run, so another process
    takes a job over only ``duration_s`` after its runner stopped renewing (died)."""

    owner: str
    duration_s: float

    def expires_at(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.duration_s)


@dataclass(frozen=True)
class Claims:
    """``claim_jobs``' answer: the jobs now leased to the claimer (``run``) and those a
    live lease of a runner still holds (``held``: ask again later); the other requests
    need no work."""

    run: list[JobRequest]
    held: list[JobRequest] = field(default_factory=list)


def decide_claims(
    requests: Sequence[JobRequest],
    stored: Mapping[tuple[str, str, str, str], JobRecord],
    *,
    now: datetime,
) -> Claims:
    """Sort ``requests`` (one per job) by ``claim_decision`` against the ``stored`` jobs. Pure."""
    claims = Claims(run=[], held=[])
    for request in requests:
        decision = claim_decision(stored.get(request.ident), request, now=now)
        if decision is ClaimDecision.RUN:
            claims.run.append(request)
        elif decision is ClaimDecision.WAIT:
            claims.held.append(request)
    return claims


class LeaseLost(ConsumerError):
    """The job's lease went to another process (this one stopped renewing it in time)."""

    retriable = False


# --- SQL both dialects share word for word --------------------------------------------

OBJECT_COLUMNS: Final = (
    "bucket, key, version_id, size, etag, content_type, user_id, user_metadata,"
    " first_event_time, last_event_time, sequencer, indexed_at, deleted, last_event_name,"
    " deleted_at"
)
JOURNAL_COLUMNS: Final = (
    "id, bucket, key, version_id, event_name, kind, event_time, sequencer, principal_id,"
    " source_ip, user_agent, request_id, size, etag, kafka_topic, kafka_partition,"
    " kafka_offset, recorded_at"
)
JOB_COLUMNS: Final = (
    "bucket, key, version_id, processor, sequencer, etag, status, attempts, last_error,"
    " result_bucket, result_key, created_at, started_at, finished_at, duration_ms, updated_at,"
    " lease_owner, lease_expires_at"
)

# Saving a planned row replaces every column of the stored one (see plan_objects).
OBJECT_UPSERT: Final = """
ON CONFLICT (bucket, key, version_id) DO UPDATE SET
    size = excluded.size, etag = excluded.etag, content_type = excluded.content_type,
    user_id = excluded.user_id, user_metadata = excluded.user_metadata,
    first_event_time = excluded.first_event_time, last_event_time = excluded.last_event_time,
    sequencer = excluded.sequencer, indexed_at = excluded.indexed_at,
    deleted = excluded.deleted, last_event_name = excluded.last_event_name,
    deleted_at = excluded.deleted_at"""

# A job for new content starts over; for the same content (a redelivery after a crash)
# its attempts carry on.
JOB_PEND_UPSERT: Final = """
ON CONFLICT (bucket, key, version_id, processor) DO UPDATE SET
    attempts = CASE WHEN jobs.sequencer = excluded.sequencer THEN jobs.attempts ELSE 0 END,
    last_error = CASE WHEN jobs.sequencer = excluded.sequencer THEN jobs.last_error END,
    sequencer = excluded.sequencer, etag = excluded.etag, status = 'pending',
    updated_at = excluded.updated_at, lease_owner = excluded.lease_owner,
    lease_expires_at = excluded.lease_expires_at"""

# The summary status of an object's jobs, worst first: failed, running, pending, done.
PROCESSING_STATUS_SQL: Final = (
    "SELECT status FROM jobs WHERE jobs.bucket = objects.bucket AND jobs.key = objects.key"
    " AND jobs.version_id = objects.version_id ORDER BY CASE status WHEN 'failed' THEN 0"
    " WHEN 'running' THEN 1 WHEN 'pending' THEN 2 ELSE 3 END LIMIT 1"
)


@dataclass(frozen=True)
class UsageRow:
    """Objects and bytes for one user or bucket (``group`` None: no user).

    ``objects`` / ``bytes``: the live objects, as a listing shows them (the latest version
    of each key, unless that is a delete marker). ``stored_objects`` / ``stored_bytes``:
    every stored version, noncurrent ones and those behind delete markers included —
    what the disks hold.
    """

    group: str | None
    objects: int
    bytes: int
    stored_objects: int = 0
    stored_bytes: int = 0


@dataclass(frozen=True)
class Transcript:
    """The text a processor heard in one object version, for full-text search.

    ``language`` is what the transcriber reported (``ru``, ``english``, …; None: unknown);
    PostgreSQL picks its text-search configuration from it (``search_config``).
    """

    bucket: str
    key: str
    version_id: str
    processor: str
    text: str
    language: str | None = None


# The text-search configurations PostgreSQL ships, by the language names and ISO codes
# transcribers report; anything else is searched word by word ("simple").
_SEARCH_CONFIGS: Final[Mapping[str, str]] = {
    **dict.fromkeys(("ru", "rus", "russian"), "russian"),
    **dict.fromkeys(("en", "eng", "english"), "english"),
    **dict.fromkeys(("de", "deu", "ger", "german"), "german"),
    **dict.fromkeys(("fr", "fra", "fre", "french"), "french"),
    **dict.fromkeys(("es", "spa", "spanish"), "spanish"),
    **dict.fromkeys(("it", "ita", "italian"), "italian"),
    **dict.fromkeys(("uk", "ukr", "ukrainian"), "simple"),
}
# Queries are matched in these configurations at once (OR), so a Russian and an English
# transcript are both found by their own stems, whatever language the query is in.
SEARCH_QUERY_CONFIGS: Final = ("russian", "english", "simple")
_WORD: Final = re.compile(r"\w+")


def search_config(language: str | None) -> str:
    """PostgreSQL's text-search configuration for a transcript's language. Pure."""
    if not language:
        return "simple"
    return _SEARCH_CONFIGS.get(language.strip().lower().split("-")[0], "simple")


def search_words(text: str) -> list[str]:
    """The words of a search text, lower-cased; InvalidInput when there are none. Pure.

    Only words are kept (no operators, quotes or wildcards from the user), so neither
    FTS5's query syntax nor PostgreSQL's can be tripped by what is typed.
    """
    words = _WORD.findall(text.lower())
    if not words:
        raise InvalidInput(f"search text {text!r} has no words to look for")
    return words


def fts5_query(text: str) -> str:
    """An FTS5 MATCH expression: every word of ``text``, each also as a prefix
    ("мир" finds "мира"; FTS5 has no Russian stemmer). Pure."""
    return " ".join(f'"{word}"*' for word in search_words(text))


@dataclass(frozen=True)
class GrowthRow:
    """What one UTC day changed, from the journal (see ``growth_sql``).

    ``objects_created``: writes that made a new live object; ``bytes_created``: the bytes
    of every write (new objects and overwrites); ``objects_removed``: removals of live
    objects; ``bytes_removed``: the bytes that left — removed objects and the content an
    overwrite replaced. So ``net_*`` is the change of ``usage`` over the day.
    """

    day: date
    objects_created: int = 0
    bytes_created: int = 0
    objects_removed: int = 0
    bytes_removed: int = 0

    @property
    def net_objects(self) -> int:
        return self.objects_created - self.objects_removed

    @property
    def net_bytes(self) -> int:
        return self.bytes_created - self.bytes_removed


# Journal kinds as SQL conditions (constants): a write of content, a removal.
_WRITES_SQL: Final = (
    f"(kind = '{EventKind.CREATED}' OR (kind = '{EventKind.RECONCILED}'"
    f" AND event_name = '{RECONCILE_FOUND}'))"
)
_REMOVES_SQL: Final = (
    f"(kind IN ('{EventKind.REMOVED}', '{EventKind.EXPIRED}') OR"
    f" (kind = '{EventKind.RECONCILED}' AND event_name = '{RECONCILE_GONE}'))"
)


def growth_query(
    placeholder: Callable[[int], str],
    day_sql: str,
    since: object,
    *,
    bucket: str | None,
    user_id: str | None,
) -> tuple[str, list[object]]:
    """SQL and parameters giving, per UTC day from ``since``, the columns of GrowthRow.

    Every write or removal is compared with the previous one of the same row (bucket,
    key, version) in sequencer order — window functions, so history from before the
    window counts too: a write after a write is an overwrite (no new object, the old
    bytes leave), a removal after a removal removes nothing. A user is the ``user_id`` of
    the object's row (removal events carry no metadata). ``day_sql`` turns ``event_time``
    into 'YYYY-MM-DD'; ``since`` is in the dialect's stored form.
    """
    params: list[object] = []

    def mark(value: object) -> str:
        params.append(value)
        return placeholder(len(params))

    in_bucket = f" AND bucket = {mark(bucket)}" if bucket is not None else ""
    from_since = mark(since)
    of_user = ""
    if user_id is not None:
        of_user = (
            " AND EXISTS (SELECT 1 FROM objects AS o WHERE o.bucket = changes.bucket"  # noqa: S608
            " AND o.key = changes.key AND o.version_id = changes.version_id"
            f" AND o.user_id = {mark(user_id)})"
        )
    sql = f"""
WITH changes AS (
    SELECT bucket, key, version_id, event_time, size,
           CASE WHEN {_WRITES_SQL} THEN 1 ELSE 0 END AS writes,
           LAG(CASE WHEN {_WRITES_SQL} THEN 1 ELSE 0 END) OVER w AS after_write,
           LAG(size) OVER w AS previous_size
    FROM journal
    WHERE ({_WRITES_SQL} OR {_REMOVES_SQL}){in_bucket}
    WINDOW w AS (PARTITION BY bucket, key, version_id ORDER BY sequencer, event_time, id)
)
SELECT {day_sql} AS day,
    CAST(SUM(CASE WHEN writes = 1 AND COALESCE(after_write, 0) = 0 THEN 1 ELSE 0 END)
         AS BIGINT),
    CAST(SUM(CASE WHEN writes = 1 THEN COALESCE(size, 0) ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN writes = 0 AND after_write = 1 THEN 1 ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN after_write = 1 THEN COALESCE(previous_size, 0) ELSE 0 END) AS BIGINT)
FROM changes
WHERE event_time >= {from_since}{of_user}
GROUP BY day ORDER BY day"""  # noqa: S608 - constant fragments, values are parameters
    return sql, params


def every_day(rows: Iterable[GrowthRow], first: date, last: date) -> list[GrowthRow]:
    """One row per day from ``first`` to ``last``: days without changes get zeros."""
    by_day = {row.day: row for row in rows}
    count = (last - first).days + 1
    days = (first + timedelta(days=n) for n in range(max(count, 0)))
    return [by_day.get(day, GrowthRow(day)) for day in days]


# --- the store's Protocol ----------------------------------------------------------------


class AsyncLifecycle:
    """``async with store:`` = ``await store.start()`` … ``await store.close()``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class IndexStore(Protocol):
    """What the indexer, the CLI and the processors need from the index.

    Every method raises IndexUnavailable (retriable) when the database cannot be reached or
    is locked, and IndexWriteFailed for permanent failures.
    """

    db_system: str  # OpenTelemetry's db.system.name: "sqlite", "postgresql"

    async def start(self) -> None:
        """Connect and apply pending migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def ping(self) -> None:
        """Round-trip to the database; raises IndexUnavailable if it does not answer."""

    async def apply_batch(
        self, items: Sequence[tuple[ObjectEvent, KafkaPosition | None]]
    ) -> BatchResult:
        """Journal and apply ``items`` in ONE transaction; idempotent under redelivery."""

    async def list_objects(
        self,
        *,
        bucket: str | None = None,
        user_id: str | None = None,
        prefix: str | None = None,
        metadata: Mapping[str, str] | None = None,
        include_deleted: bool = False,
        limit: int = 1000,
        after: tuple[str, str, str] | None = None,
        processing_status: str | None = None,
        created_before: datetime | None = None,
        versions: Versions = Versions.ROWS,
        text: str | None = None,
    ) -> list[ObjectRecord]:
        """Objects ordered by (bucket, key, version_id), starting after the ``after`` cursor.

        ``prefix`` matches key prefixes literally (``%`` and ``_`` are not wildcards);
        ``metadata`` names are matched lower-cased, as events store them;
        ``created_before`` keeps rows whose first event is older than that moment.
        ``versions`` picks the view (see Versions; ``include_deleted`` only applies to
        ROWS); ``text`` (CURRENT or ALL only) keeps the objects whose transcript has every
        word of it, each record with its ``snippet``. Raises InvalidInput for a text
        without words or with ROWS.
        """

    async def get_object(
        self, bucket: str, key: str, version_id: str = ""
    ) -> ObjectRecord | None: ...

    async def usage(self, *, by: Literal["user", "bucket"]) -> list[UsageRow]:
        """Live and stored objects and bytes per group (UsageRow), ordered by group
        (None last)."""

    async def put_transcript(self, transcript: Transcript) -> None:
        """Index (or re-index: the entry of that version and processor is replaced) a
        transcript for full-text search. Entries of removed versions are dropped by
        ``apply_batch``."""

    async def growth(
        self, *, since: date, bucket: str | None = None, user_id: str | None = None
    ) -> list[GrowthRow]:
        """What each UTC day from ``since`` on changed (GrowthRow), from the journal;
        only days with changes, oldest first. ``bucket`` / ``user_id`` narrow it down."""

    async def journal(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int = 100,
    ) -> list[JournalRecord]:
        """Most recently journaled first; ``kinds`` keeps only events of those kinds."""

    async def prune_journal(self, older_than: datetime) -> int:
        """Delete journal entries whose event_time is before ``older_than``; their count."""

    async def counts(self) -> dict[str, int]:
        """{"objects": live rows, "tombstones": deleted rows, "journal": journal rows}."""

    async def claim_jobs(self, requests: Sequence[JobRequest], lease: Lease) -> Claims:
        """Decide every request (``claim_decision``) in one transaction that excludes
        other claimers of the same objects; the jobs to run are marked pending under
        ``lease``. Requests for one job are reduced to the newest (``latest_requests``)."""

    async def start_job(self, request: JobRequest, owner: str) -> int:
        """Mark the job running; its attempt number (1 for the first run). Raises
        LeaseLost when ``owner`` no longer holds the job's lease."""

    async def finish_job(self, request: JobRequest, outcome: JobOutcome, owner: str) -> bool:
        """Record how the job ended (done or failed) and release its lease; False (and
        nothing written) when ``owner`` no longer holds the lease."""

    async def renew_leases(self, lease: Lease) -> int:
        """Extend every unfinished job leased to ``lease.owner``; how many."""

    async def jobs(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        status: JobStatus | None = None,
        limit: int = 1000,
    ) -> list[JobRecord]:
        """Jobs ordered by (bucket, key, version_id, processor)."""


# --- pure decisions ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredState:
    """The part of an ``objects`` row that decides whether an event is newer."""

    sequencer: str
    event_time: datetime
    deleted: bool


class Action(StrEnum):
    """What to do to the ``objects`` row of the event's (bucket, key, version_id)."""

    JOURNAL_ONLY = "journal_only"  # NOOP / OTHER: the inventory does not change
    STALE = "stale"  # older than (or equal to) the stored row: leave it
    INSERT = "insert"  # no row yet: insert a live row
    OVERWRITE = "overwrite"  # newer content: replace every field, revive a tombstone
    TOUCH = "touch"  # newer metadata change: update what the event carries
    TOMBSTONE = "tombstone"  # newer removal of a known row: mark it deleted
    INSERT_TOMBSTONE = "insert_tombstone"  # removal of an unknown row: remember it

    @property
    def changes_objects(self) -> bool:
        return self not in (Action.JOURNAL_ONLY, Action.STALE)


def is_newer(event: ObjectEvent, stored: StoredState) -> bool:
    """Whether ``event`` happened after the event that last wrote ``stored``.

    Sequencer first, then event_time for equal sequencers; equal in both is not newer.
    """
    if event.sequencer != stored.sequencer:
        return event.is_newer_than(stored.sequencer)
    return event.event_time > stored.event_time


def decide(stored: StoredState | None, event: ObjectEvent) -> Action:
    """What ``event`` does to the row it addresses, given that row's state (None: no row).

    * NOOP / OTHER only go to the journal.
    * No row: a create or metadata change inserts a live row (a metadata event is how we
      may first learn of an object); a removal inserts a tombstone, so that an older
      create arriving later cannot bring the object back.
    * A row exists: events not newer than it are stale. A newer create overwrites (and
      revives a tombstone); a newer metadata change touches — it also revives a
      tombstone, because the object must exist again to be changed after its removal;
      a newer removal tombstones.
    """
    if not affects_objects(event):
        return Action.JOURNAL_ONLY
    removal = removes_object(event)
    if stored is None:
        return Action.INSERT_TOMBSTONE if removal else Action.INSERT
    if not is_newer(event, stored):
        return Action.STALE
    if removal:
        return Action.TOMBSTONE
    return Action.OVERWRITE if writes_content(event) else Action.TOUCH


def sweeps_other_versions(event: ObjectEvent) -> bool:
    """Whether a removal also tombstones the key's other versions (live and older).

    Only MinIO's DeleteAllVersions (a force delete) does: every version of the key is gone.
    A DeleteMarkerCreated only hides the current version; the versions behind the marker
    still exist and still take space, so they stay live rows.
    """
    return removes_object(event) and event.event_name == DELETE_ALL_VERSIONS


def order_for_apply(events: Sequence[ObjectEvent]) -> list[ObjectEvent]:
    """``events`` grouped by (bucket, key), each group in (sequencer, event_time) order.

    Stable, so equal events keep arrival order. Grouping by key (not by version) keeps a
    DeleteAllVersions after the version writes it supersedes. Because of this order, a
    batch ends in the same state as its events applied one at a time in sequencer order,
    whatever order they arrived in.
    """
    return sorted(events, key=lambda e: (e.bucket, e.key, e.sequencer, e.event_time))


def escape_like(prefix: str) -> str:
    """A LIKE pattern matching keys that start with ``prefix`` literally (ESCAPE '\\')."""
    escaped = (
        prefix.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return escaped + "%"


def check_limit(limit: int) -> int:
    """``limit`` if positive; raises InvalidInput otherwise (SQLite reads -1 as "all")."""
    if limit < 1:
        raise InvalidInput(f"limit must be a positive number, got {limit}")
    return limit


def lower_names(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Metadata filters with names lower-cased, as ObjectEvent stores user metadata."""
    return {name.lower(): value for name, value in (metadata or {}).items()}


# --- the batch algorithm both backends share ---------------------------------------------

RowId = tuple[str, str, str]  # (bucket, key, version_id): one row of ``objects``
JournalId = tuple[str, str, str, str, str]  # the journal's unique identity of an event
Item = tuple[ObjectEvent, KafkaPosition | None]


def row_id(event: ObjectEvent) -> RowId:
    return (event.bucket, event.key, event.version_id)


def record_id(record: ObjectRecord) -> RowId:
    return (record.bucket, record.key, record.version_id)


def journal_id(event: ObjectEvent) -> JournalId:
    """What makes a journal entry unique: a redelivered event has the same identity."""
    return (event.bucket, event.key, event.version_id, event.event_name, event.sequencer)


def affects_objects(event: ObjectEvent) -> bool:
    """Whether the event can change ``objects`` (NOOP / OTHER only go to the journal)."""
    return (
        event.kind is EventKind.METADATA_CHANGED or writes_content(event) or removes_object(event)
    )


class BatchWriter(Protocol):
    """The set-wise steps of ``run_batch``, inside the backend's transaction. Each step is
    a few statements for the whole batch, never one per event: the batch is the unit of
    work, and per-statement overhead (a thread hop for aiosqlite, a round trip for
    PostgreSQL) would otherwise dominate."""

    async def journal_new(self, items: Sequence[Item]) -> set[JournalId]:
        """Journal the items not journaled yet (identities are distinct within ``items``);
        the identities actually inserted."""

    async def load_rows(
        self, rows: Collection[RowId], all_versions_of: Collection[tuple[str, str]]
    ) -> list[ObjectRecord]:
        """The stored rows (tombstones too) of ``rows``, and every version of each
        (bucket, key) in ``all_versions_of``."""

    async def save_rows(self, rows: Sequence[ObjectRecord]) -> None:
        """Insert each row, or replace every column of the stored row with its values."""


_JSON: Final = msgspec.json.Encoder(order="sorted")


def canonical_json(value: object) -> str:
    """``json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))``,
    character for character (tests/index/test_canonical_json.py compares them), at a tenth of
    its cost: the metadata of every row a batch saves goes through it. The stdlib takes
    what msgspec refuses (a lone surrogate, a non-string key)."""
    try:
        return _JSON.encode(value).decode()
    except (msgspec.EncodeError, TypeError, UnicodeError):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def first_of_each_identity(items: Sequence[Item]) -> tuple[list[Item], int]:
    """The items with identities unseen earlier in ``items``, and how many repeated one."""
    seen: set[JournalId] = set()
    unique: list[Item] = []
    for item in items:
        identity = journal_id(item[0])
        if identity not in seen:
            seen.add(identity)
            unique.append(item)
    return unique, len(items) - len(unique)


async def run_batch(writer: BatchWriter, items: Sequence[Item], now: datetime) -> BatchResult:
    """Journal every event in arrival order, then apply the new ones in apply order.

    Events already in the journal are skipped: the transaction that journaled them also
    applied them, so applying them again could only repeat (or, after a newer event,
    undo) that effect. The caller owns the transaction; ``now`` is its ``indexed_at``.
    """
    unique, repeated = first_of_each_identity(items)
    inserted = await writer.journal_new(unique)
    fresh = [event for event, _ in unique if journal_id(event) in inserted]
    changing = order_for_apply([event for event in fresh if affects_objects(event)])
    stored: list[ObjectRecord] = []
    if changing:
        stored = await writer.load_rows(
            {(e.bucket, e.key, e.version_id) for e in changing},
            {
                (e.bucket, e.key)
                for e in changing
                # The name first: it rules out all but force deletes at once.
                if e.event_name == DELETE_ALL_VERSIONS and sweeps_other_versions(e)
            },
        )
    plan = plan_objects(stored, changing, now)
    if plan.changed:
        await writer.save_rows(list(plan.changed.values()))
    return BatchResult(
        journaled=len(fresh),
        duplicates=repeated + len(unique) - len(fresh),
        objects_changed=plan.objects_changed,
        stale_ignored=plan.stale_ignored,
    )


@dataclass
class ObjectPlan:
    """The rows a batch changes (final state per row) and what it did to get there."""

    changed: dict[RowId, ObjectRecord] = field(default_factory=dict)
    objects_changed: int = 0  # actions that changed a row, sweeps counted per row
    stale_ignored: int = 0


def plan_objects(
    stored: Iterable[ObjectRecord], events: Sequence[ObjectEvent], now: datetime
) -> ObjectPlan:
    """Apply ``events`` (in apply order) to the ``stored`` rows in memory.

    Each event is decided against the row as the events before it left it, exactly as if
    they were written one at a time, but every row is written once, in its final state.
    """
    rows = {record_id(record): record for record in stored}
    plan = ObjectPlan()
    for event in events:
        rid = (event.bucket, event.key, event.version_id)  # row_id(event), once
        current = rows.get(rid)
        action = decide(_stored_state(current), event)
        if action is Action.STALE:
            plan.stale_ignored += 1
        if not action.changes_objects:
            continue
        updates = {rid: apply_action(current, action, event, now)}
        if event.event_name == DELETE_ALL_VERSIONS and sweeps_other_versions(event):
            updates.update(
                (record_id(row), tombstoned(row, event, now))
                for row in rows.values()
                if _swept_by(row, event)
            )
        rows.update(updates)
        plan.changed.update(updates)
        plan.objects_changed += len(updates)
    return plan


def _stored_state(row: ObjectRecord | None) -> StoredState | None:
    if row is None:
        return None
    return StoredState(row.sequencer, row.last_event_time, row.deleted)


def _swept_by(row: ObjectRecord, event: ObjectEvent) -> bool:
    """A live, older, other version of the key a DeleteAllVersions removes."""
    return (
        (row.bucket, row.key) == (event.bucket, event.key)
        and row.version_id != event.version_id
        and not row.deleted
        and row.sequencer < event.sequencer
    )


def apply_action(
    current: ObjectRecord | None, action: Action, event: ObjectEvent, now: datetime
) -> ObjectRecord:
    """The row after ``action`` (one that ``changes_objects``) for ``event``.

    INSERT / INSERT_TOMBSTONE build a row from the event; OVERWRITE replaces the content;
    TOUCH keeps stored values the event does not carry (a metadata change carries what it
    carries); TOMBSTONE marks the row deleted. All of them record the event as the row's
    latest.
    """
    if current is None or action in (Action.INSERT, Action.INSERT_TOMBSTONE):
        deleted = action is Action.INSERT_TOMBSTONE
        return ObjectRecord(
            bucket=event.bucket,
            key=event.key,
            version_id=event.version_id,
            size=event.size,
            etag=event.etag,
            content_type=event.content_type,
            user_id=event.user_id,
            metadata=dict(event.user_metadata),
            first_event_time=event.event_time,
            last_event_time=event.event_time,
            sequencer=event.sequencer,
            indexed_at=now,
            deleted=deleted,
            last_event_name=event.event_name,
            deleted_at=event.event_time if deleted else None,
        )
    if action is Action.TOMBSTONE:
        return tombstoned(current, event, now)
    if action is Action.OVERWRITE:
        content = replace(
            current,
            size=event.size,
            etag=event.etag,
            content_type=event.content_type,
            user_id=event.user_id,
            metadata=dict(event.user_metadata),
        )
    elif action is Action.TOUCH:
        content = replace(
            current,
            size=_first_known(event.size, current.size),
            etag=_first_known(event.etag, current.etag),
            content_type=_first_known(event.content_type, current.content_type),
            user_id=_first_known(event.user_id, current.user_id),
            metadata=dict(event.user_metadata) or current.metadata,
        )
    else:
        raise IndexWriteFailed(f"action {action} does not write objects")
    return replace(
        content,
        last_event_time=event.event_time,
        sequencer=event.sequencer,
        last_event_name=event.event_name,
        indexed_at=now,
        deleted=False,
        deleted_at=None,
    )


def tombstoned(row: ObjectRecord, event: ObjectEvent, now: datetime) -> ObjectRecord:
    """``row`` marked deleted by the removal ``event``."""
    return replace(
        row,
        deleted=True,
        deleted_at=event.event_time,
        last_event_time=event.event_time,
        sequencer=event.sequencer,
        last_event_name=event.event_name,
        indexed_at=now,
    )


def _first_known(value: T | None, fallback: T | None) -> T | None:
    return value if value is not None else fallback


def chunked(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most ``size`` (statements have a parameter limit)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- building WHERE clauses without formatting values into SQL ---------------------------


@dataclass
class Conditions:
    """AND-ed SQL conditions with their parameters, for either placeholder style.

    Templates are constant SQL fragments with ``{}`` where a parameter goes; only the
    placeholders ("?" or "$n") are formatted in, values always travel as parameters.
    ``first`` is the number of the first parameter, for conditions that follow others in
    one statement.
    """

    placeholder: Callable[[int], str]  # 1-based parameter number -> placeholder text
    clauses: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)
    first: int = 1

    def add(self, template: str, *values: object) -> None:
        first = len(self.params) + self.first
        marks = [self.placeholder(first + i) for i in range(len(values))]
        self.clauses.append(template.format(*marks))
        self.params.extend(values)

    def next_placeholder(self) -> str:
        """The placeholder for a parameter appended after the conditions (e.g. LIMIT)."""
        return self.placeholder(len(self.params) + self.first)

    def following(self) -> Conditions:
        """Empty conditions whose parameters come after these ones."""
        return Conditions(self.placeholder, first=len(self.params) + self.first)

    @property
    def where(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


@dataclass(frozen=True)
class ObjectFilter:
    """The filters of ``list_objects``; each backend only adds its dialect's pieces."""

    bucket: str | None = None
    user_id: str | None = None
    prefix: str | None = None
    metadata: Mapping[str, str] | None = None
    include_deleted: bool = False
    after: tuple[str, str, str] | None = None
    processing_status: str | None = None
    created_before: datetime | None = None

    def conditions(
        self,
        placeholder: Callable[[int], str],
        *,
        live_only: str,
        add_metadata: Callable[[Conditions, dict[str, str]], None],
        moment: Callable[[datetime], object] = lambda value: value,
    ) -> Conditions:
        """Conditions in order (deleted, bucket, prefix, user, metadata, status, age,
        cursor).

        ``live_only`` is the dialect's "not a tombstone" clause; ``add_metadata`` adds the
        dialect's metadata match for the lower-cased filter; ``moment`` turns a datetime
        into the dialect's stored form.
        """
        where = Conditions(placeholder)
        if not self.include_deleted:
            where.add(live_only)
        self.add_key_conditions(where)
        self.add_row_conditions(where, add_metadata=add_metadata, moment=moment)
        return where

    def add_key_conditions(self, where: Conditions) -> None:
        """The filters that keep or drop whole keys (every version alike)."""
        if self.bucket is not None:
            where.add("bucket = {}", self.bucket)
        if self.prefix:
            where.add("key LIKE {} ESCAPE '\\'", escape_like(self.prefix))

    def add_row_conditions(
        self,
        where: Conditions,
        *,
        add_metadata: Callable[[Conditions, dict[str, str]], None],
        moment: Callable[[datetime], object],
    ) -> None:
        """The filters that look at one version's row (its owner, metadata, jobs, age)."""
        if self.user_id is not None:
            where.add("user_id = {}", self.user_id)
        if self.metadata:
            add_metadata(where, lower_names(self.metadata))
        if self.processing_status is not None:
            where.add(f"({PROCESSING_STATUS_SQL}) = {{}}", self.processing_status)
        if self.created_before is not None:
            where.add("first_event_time < {}", moment(self.created_before))
        if self.after is not None:
            where.add("(bucket, key, version_id) > ({}, {}, {})", *self.after)


@dataclass(frozen=True)
class Dialect:
    """The pieces of SQL in which the two backends differ, for the shared queries."""

    placeholder: Callable[[int], str]
    is_deleted: str  # "deleted = 1" (SQLite's 0/1) or "deleted" (PostgreSQL's boolean)
    add_metadata: Callable[[Conditions, dict[str, str]], None]
    moment: Callable[[datetime], object]
    # The matching transcripts of a text search: a SELECT of hit_bucket, hit_key,
    # hit_version and snippet, with one {} where the query parameter goes.
    text_hits: str
    text_query: Callable[[str], object]  # the search text as that parameter

    @property
    def gone(self) -> str:
        """A removed version: a tombstone that is not a delete marker."""
        return f"({self.is_deleted} AND last_event_name <> '{DELETE_MARKER_CREATED}')"


# Latest first: the greatest sequencer (the version's modification time) wins; the first
# event's time and the version id only break ties.
_VERSION_RANK: Final = (
    "ROW_NUMBER() OVER (PARTITION BY bucket, key"
    " ORDER BY sequencer DESC, first_event_time DESC, version_id DESC)"
)


def version_listing_query(
    filters: ObjectFilter,
    versions: Versions,
    dialect: Dialect,
    *,
    text: str | None,
    limit: int,
) -> tuple[str, list[object]]:
    """SQL and parameters of a listing in the CURRENT or ALL view (see Versions).

    Removed versions never show; the key filters (bucket, prefix) narrow the versions
    ranked, the row filters (user, metadata, status, age, cursor) apply to the ranked
    rows — so an older version of another owner cannot stand in for the latest one.
    ``text`` keeps the rows whose transcript matches, with a snippet.
    """
    inner = Conditions(dialect.placeholder)
    inner.add(f"NOT {dialect.gone}")
    filters.add_key_conditions(inner)
    join = ""
    params: list[object] = list(inner.params)
    outer = inner.following()
    if text is not None:
        mark = outer.next_placeholder()
        params.append(dialect.text_query(text))
        join = (
            f" JOIN ({dialect.text_hits.format(mark)}) AS hits ON hits.hit_bucket = objects.bucket"
            " AND hits.hit_key = objects.key AND hits.hit_version = objects.version_id"
        )
        outer = Conditions(dialect.placeholder, first=outer.first + 1)
    if versions is Versions.CURRENT:
        outer.add(f"version_rank = 1 AND NOT ({dialect.is_deleted})")
    filters.add_row_conditions(outer, add_metadata=dialect.add_metadata, moment=dialect.moment)
    params += outer.params
    params.append(check_limit(limit))
    snippet = ", hits.snippet AS snippet" if text is not None else ""
    sql = f"""
WITH ranked AS (
    SELECT {OBJECT_COLUMNS}, {_VERSION_RANK} AS version_rank
    FROM objects{inner.where}
)
SELECT {OBJECT_COLUMNS}, ({PROCESSING_STATUS_SQL}) AS processing_status,
       version_rank = 1 AS is_latest{snippet}
FROM ranked AS objects{join}{outer.where}
ORDER BY bucket, key, version_id LIMIT {outer.next_placeholder()}"""  # noqa: S608 - constant fragments, values are parameters
    return sql, params


def usage_query(by: Literal["user", "bucket"], dialect: Dialect) -> str:
    """SQL giving UsageRow's columns per group: live (latest, not a delete marker) and
    stored (every version not removed) objects and bytes; groups holding nothing are
    left out. Ordered by group, None last."""
    group = {"user": "user_id", "bucket": "bucket"}[by]
    return f"""
WITH ranked AS (
    SELECT {group} AS grp, size, CASE WHEN {dialect.is_deleted} THEN 0 ELSE 1 END AS stored,
           {_VERSION_RANK} AS version_rank
    FROM objects WHERE NOT {dialect.gone}
)
SELECT grp,
    CAST(SUM(CASE WHEN version_rank = 1 THEN stored ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN version_rank = 1 AND stored = 1 THEN COALESCE(size, 0) ELSE 0 END)
         AS BIGINT),
    CAST(SUM(stored) AS BIGINT),
    CAST(SUM(CASE WHEN stored = 1 THEN COALESCE(size, 0) ELSE 0 END) AS BIGINT)
FROM ranked GROUP BY grp HAVING SUM(stored) > 0
ORDER BY grp IS NULL, grp"""  # noqa: S608 - constant fragments


def journal_conditions(
    placeholder: Callable[[int], str],
    bucket: str | None,
    key: str | None,
    kinds: Collection[EventKind] | None,
) -> Conditions:
    """The filters of ``journal``."""
    where = Conditions(placeholder)
    if bucket is not None:
        where.add("bucket = {}", bucket)
    if key is not None:
        where.add("key = {}", key)
    if kinds is not None:
        ordered = sorted(str(kind) for kind in kinds)
        if not ordered:
            where.add("1 = 0")
        else:
            where.add(f"kind IN ({', '.join(['{}'] * len(ordered))})", *ordered)
    return where


def qmark(_: int) -> str:
    return "?"


def dollar(number: int) -> str:
    return f"${number}"
