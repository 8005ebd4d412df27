"""The pure rules every index backend follows: what an event does to a row, a batch, a job.

Nothing here does I/O. ``decide`` says what one event does to one stored row;
``order_for_apply`` puts a batch in the order those decisions must be taken;
``plan_objects`` takes them, in memory, against the rows the batch touches; ``run_batch``
drives a backend's ``BatchWriter`` (journal the new events, load the rows they touch, save
the changed rows: a few set-wise statements per batch) inside the backend's transaction.
Both backends (sqlite.py, postgres.py) only translate these steps into SQL, so they cannot
disagree about semantics. ``claim_decision`` does the same for processing jobs: run, wait
for a live lease, or skip.

Ordering: an event is newer than a stored row when its sequencer is greater (numerically;
sequencers are normalised to fixed-width hex so string order is numeric order). Equal
sequencers are broken by ``event_time`` — MinIO can give a tagging change the sequencer of
the write it tags — and an event equal in both is not newer, so a redelivery never wins
over itself. A missing sequencer ("") is older than any real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, NamedTuple, TypeVar

import msgspec

from consumer.errors import IndexWriteFailed
from consumer.events import (
    RECONCILE_FOUND,
    RECONCILE_GONE,
    AnyEvent,
    EventKind,
    removes_object,
    writes_content,
)
from consumer.index.records import (
    BatchResult,
    Claims,
    Item,
    JobRecord,
    JobRequest,
    JobStatus,
    JournalId,
    ObjectRow,
    RowId,
)
from consumer.index.store import BatchWriter

T = TypeVar("T")
E = TypeVar("E", bound=AnyEvent)


# --- what one event does to one row ----------------------------------------------------


# MinIO's force-delete of a key removes every version at once (see sweeps_other_versions).
DELETE_ALL_VERSIONS: Final = "s3:ObjectRemoved:DeleteAllVersions"


class StoredState(NamedTuple):
    """The part of an ``objects`` row that decides whether an event is newer (a named
    tuple: one is made per event of a batch)."""

    sequencer: str
    event_time: datetime
    deleted: bool


class Action(StrEnum):
    """What to do to the ``objects`` row of the event's (bucket, key, version_id)."""

    JOURNAL_ONLY = "journal_only"  # OTHER, most NOOPs: the inventory does not change
    STALE = "stale"  # older than (or equal to) the stored row: leave it
    INSERT = "insert"  # no row yet: insert a live row
    OVERWRITE = "overwrite"  # newer content: replace every field, revive a tombstone
    TOUCH = "touch"  # newer metadata change: update what the event carries
    TOMBSTONE = "tombstone"  # newer removal of a known row: mark it deleted
    INSERT_TOMBSTONE = "insert_tombstone"  # removal of an unknown row: remember it

    @property
    def changes_objects(self) -> bool:
        return self not in (Action.JOURNAL_ONLY, Action.STALE)


def is_newer(event: AnyEvent, stored: StoredState) -> bool:
    """Whether ``event`` happened after the event that last wrote ``stored``.

    Sequencer first, then event_time for equal sequencers; equal in both is not newer.
    """
    if event.sequencer != stored.sequencer:
        return event.is_newer_than(stored.sequencer)
    return event.event_time > stored.event_time


def decide(stored: StoredState | None, event: AnyEvent) -> Action:
    """What ``event`` does to the row it addresses, given that row's state (None: no row).

    * OTHER only goes to the journal, and so does a NOOP unless it is newer than a live
      row (``_noop_action``).
    * No row: a create or metadata change inserts a live row (a metadata event is how we
      may first learn of an object); a removal inserts a tombstone, so that an older
      create arriving later cannot bring the object back.
    * A row exists: events not newer than it are stale. A newer create overwrites (and
      revives a tombstone); a newer metadata change touches — it also revives a
      tombstone, because the object must exist again to be changed after its removal;
      a newer removal tombstones.
    """
    if event.kind is EventKind.NOOP:
        return _noop_action(stored, event)
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


def _noop_action(stored: StoredState | None, event: AnyEvent) -> Action:
    """A NoOP says the key held nothing to delete at its moment. Normally no live row is
    older than that; but a distributed MinIO, under writes refused for want of quorum
    around a node's crash, was seen to answer a DELETE of a live object with a NoOP and
    remove it all the same (tests/faults/test_minio_cluster.py): a live row older than
    the NoOP is then stale, and tombstoned. Otherwise the journal only: no row is made
    for a key that held nothing."""
    if stored is not None and not stored.deleted and is_newer(event, stored):
        return Action.TOMBSTONE
    return Action.JOURNAL_ONLY


def affects_objects(event: AnyEvent) -> bool:
    """Whether the event can change ``objects``: a metadata change, content written or
    removed (``writes_content``, ``removes_object``), or a NOOP, which can tombstone an
    older live row. OTHER only goes to the journal."""
    kind = event.kind
    if kind is EventKind.RECONCILED:
        return event.event_name in _RECONCILE_REPAIRS
    return kind in _CHANGING_KINDS


# One set lookup per event instead of the chain of tests ``writes_content`` and
# ``removes_object`` make (tests/index/test_decisions.py checks they agree).
_CHANGING_KINDS: Final = frozenset(
    {EventKind.CREATED, EventKind.METADATA_CHANGED, EventKind.REMOVED, EventKind.EXPIRED,
     EventKind.NOOP}
)  # fmt: skip
_RECONCILE_REPAIRS: Final = frozenset({RECONCILE_FOUND, RECONCILE_GONE})


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


def sweeps_other_versions(event: AnyEvent) -> bool:
    """Whether a removal also tombstones the key's other versions (live and older).

    Only MinIO's DeleteAllVersions (a force delete) does: every version of the key is gone.
    A DeleteMarkerCreated only hides the current version; the versions behind the marker
    still exist and still take space, so they stay live rows.
    """
    return removes_object(event) and event.event_name == DELETE_ALL_VERSIONS


def order_for_apply(events: Sequence[E]) -> list[E]:
    """``events`` grouped by (bucket, key), each group in (sequencer, event_time) order.

    Stable, so equal events keep arrival order. Grouping by key (not by version) keeps a
    DeleteAllVersions after the version writes it supersedes. Because of this order, a
    batch ends in the same state as its events applied one at a time in sequencer order,
    whatever order they arrived in.
    """
    return sorted(events, key=lambda e: (e.bucket, e.key, e.sequencer, e.event_time))


def apply_action(
    current: ObjectRow | None, action: Action, event: AnyEvent, now: datetime
) -> ObjectRow:
    """The row after ``action`` (one that ``changes_objects``) for ``event``.

    INSERT / INSERT_TOMBSTONE build a row from the event; OVERWRITE replaces the content;
    TOUCH keeps stored values the event does not carry (a metadata change carries what it
    carries); TOMBSTONE marks the row deleted. All of them record the event as the row's
    latest. Rows are built whole, by position: this runs for most events of a batch.
    """
    if current is None or action in (Action.INSERT, Action.INSERT_TOMBSTONE):
        deleted = action is Action.INSERT_TOMBSTONE
        # A removal carries no content: its size, etag, type are None.
        return ObjectRow(
            event.bucket, event.key, event.version_id, event.size, event.etag,
            event.content_type, event.user_id, event.user_metadata, event.event_time,
            event.event_time, event.sequencer, now, deleted, event.event_name,
            event.event_time if deleted else None,
        )  # fmt: skip
    if action is Action.TOMBSTONE:
        return tombstoned(current, event, now)
    if action is Action.OVERWRITE:
        return ObjectRow(
            current.bucket, current.key, current.version_id, event.size, event.etag,
            event.content_type, event.user_id, event.user_metadata, current.first_event_time,
            event.event_time, event.sequencer, now, False, event.event_name, None,
        )  # fmt: skip
    if action is Action.TOUCH:
        return ObjectRow(
            current.bucket, current.key, current.version_id,
            _first_known(event.size, current.size),
            _first_known(event.etag, current.etag),
            _first_known(event.content_type, current.content_type),
            _first_known(event.user_id, current.user_id),
            event.user_metadata or current.metadata, current.first_event_time,
            event.event_time, event.sequencer, now, False, event.event_name, None,
        )  # fmt: skip
    raise IndexWriteFailed(f"action {action} does not write objects")


def tombstoned(row: ObjectRow, event: AnyEvent, now: datetime) -> ObjectRow:
    """``row`` marked deleted by the removal ``event``: its content kept, the removal
    recorded as its latest event."""
    return ObjectRow(
        row.bucket, row.key, row.version_id, row.size, row.etag, row.content_type,
        row.user_id, row.metadata, row.first_event_time, event.event_time, event.sequencer,
        now, True, event.event_name, event.event_time,
    )  # fmt: skip


def _first_known(value: T | None, fallback: T | None) -> T | None:
    return value if value is not None else fallback


# --- the batch algorithm both backends share -------------------------------------------


def row_id(event: AnyEvent) -> RowId:
    return (event.bucket, event.key, event.version_id)


def record_id(record: ObjectRow) -> RowId:
    return (record.bucket, record.key, record.version_id)


def journal_id(event: AnyEvent) -> JournalId:
    """What makes a journal entry unique: a redelivered event has the same identity."""
    return (event.bucket, event.key, event.version_id, event.event_name, event.sequencer)


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
    fresh = [event for event, _ in await writer.journal_new(unique)]
    changing = order_for_apply([event for event in fresh if affects_objects(event)])
    stored: list[ObjectRow] = []
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

    changed: dict[RowId, ObjectRow] = field(default_factory=dict)
    objects_changed: int = 0  # actions that changed a row, sweeps counted per row
    stale_ignored: int = 0


def plan_objects(
    stored: Iterable[ObjectRow], events: Sequence[AnyEvent], now: datetime
) -> ObjectPlan:
    """Apply ``events`` (in apply order) to the ``stored`` rows in memory.

    Each event is decided against the row as the events before it left it, exactly as if
    they were written one at a time, but every row is written once, in its final state.
    """
    rows = {record_id(record): record for record in stored}
    changed: dict[RowId, ObjectRow] = {}
    objects_changed = stale_ignored = 0
    for event in events:
        rid = (event.bucket, event.key, event.version_id)  # row_id(event), once
        current = rows.get(rid)
        action = decide(_stored_state(current), event)
        if action not in _WRITING:
            if action is Action.STALE:
                stale_ignored += 1
            continue
        rows[rid] = changed[rid] = apply_action(current, action, event, now)
        objects_changed += 1
        if event.event_name == DELETE_ALL_VERSIONS and sweeps_other_versions(event):
            swept = {
                record_id(row): tombstoned(row, event, now)
                for row in rows.values()
                if _swept_by(row, event)
            }
            rows.update(swept)
            changed.update(swept)
            objects_changed += len(swept)
    return ObjectPlan(changed, objects_changed, stale_ignored)


# The actions that change a row (Action.changes_objects), as a set: one lookup per event.
_WRITING: Final = frozenset(action for action in Action if action.changes_objects)


def _stored_state(row: ObjectRow | None) -> StoredState | None:
    if row is None:
        return None
    return StoredState(row.sequencer, row.last_event_time, row.deleted)


def _swept_by(row: ObjectRow, event: AnyEvent) -> bool:
    """A live, older, other version of the key a DeleteAllVersions removes."""
    return (
        (row.bucket, row.key) == (event.bucket, event.key)
        and row.version_id != event.version_id
        and not row.deleted
        and row.sequencer < event.sequencer
    )


# --- jobs ------------------------------------------------------------------------------


def same_content(stored: JobRecord, request: JobRequest) -> bool:
    """Whether the stored job and the request are of the same bytes: equal etags (MinIO's
    etag is the content's MD5, or its parts' for a multipart upload); an unknown etag
    matches nothing. Pure.

    One write can be announced under two sequencers: the reconcile's repair stamps a lost
    event's object with its Last-Modified (milliseconds), while MinIO's own event of that
    write, still in its queue, carries the nanoseconds. Content, not the sequencer, says
    whether the work was done."""
    return bool(stored.etag) and stored.etag == request.etag


def job_should_run(stored: JobRecord | None, request: JobRequest) -> bool:
    """Whether to (re)run a requested job, given the stored one.

    A job for newer content always runs; for older content never (the newer content's job
    supersedes it). For the same content a finished job is not run again (a redelivered
    event, or a second announcement of the same write), while a pending or running one is:
    its process died before finishing it. A newer write of the same bytes runs a failed
    job again: writing the object again is how a user asks for another try.
    """
    if stored is None:
        return True
    if request.sequencer < stored.sequencer:
        return False
    if request.sequencer == stored.sequencer:
        return not stored.status.finished
    if same_content(stored, request):
        return stored.status is not JobStatus.DONE
    return True


class JobStart(NamedTuple):
    """A claimed job as it is stored, pending: the request, and the attempts and last
    error it carries on from the stored job when the claim takes that job over."""

    request: JobRequest
    attempts: int
    last_error: str | None


def takes_over(stored: JobRecord | None, request: JobRequest) -> bool:
    """Whether a claim of ``request`` is the stored job itself, unfinished: the same
    sequencer, or the same write announced again under another (``same_content``). Such a
    job is waited for while its lease is live and taken over, its attempts carried on, once
    it expired. Pure."""
    return (
        stored is not None
        and not stored.status.finished
        and (stored.sequencer == request.sequencer or same_content(stored, request))
    )


def job_start(stored: JobRecord | None, request: JobRequest) -> JobStart:
    """How a claimed job starts: with the stored job's attempts and last error when the
    claim takes it over (``takes_over``), as a new job otherwise. Pure."""
    if stored is not None and takes_over(stored, request):
        return JobStart(request, stored.attempts, stored.last_error)
    return JobStart(request, 0, None)


class ClaimDecision(StrEnum):
    RUN = "run"  # the claimer takes the job (and its lease) now
    WAIT = "wait"  # a live lease holds it: its runner is at work; ask again later
    SKIP = "skip"  # finished for this content, or superseded by newer content


def claim_decision(
    stored: JobRecord | None, request: JobRequest, *, now: datetime
) -> ClaimDecision:
    """What a processor does with a job it was asked to run, given the stored one. Pure.

    Content first (``job_should_run``). Newer content runs at once, even while the older
    content's runner holds its lease. An unfinished job of the same content is running
    somewhere while its lease is live — in another process, or in this one when the event
    is redelivered after a rebalance or the write announced twice — so it is waited for,
    never run twice; once the lease expired (its runner died) it is taken over. A pending
    row without a lease (written by an older consumer) is taken at once.
    """
    if not job_should_run(stored, request):
        return ClaimDecision.SKIP
    if stored is None or not takes_over(stored, request):
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
