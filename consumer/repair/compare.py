"""What ``reconcile`` decides, without I/O: a bucket listing set beside the index's rows
(``compare``), the buckets a notification config watches, and the repair events (found,
gone) with their sequencers, as they go into the index and onto the events topic. The
I/O around them is consumer/repair/reconcile.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote_plus

from consumer.events import (
    RECONCILE_FOUND,
    RECONCILE_GONE,
    EventKind,
    ObjectEvent,
    normalise_sequencer,
    user_id_for,
    user_metadata_from_record,
)
from consumer.index import BatchResult, ObjectRecord
from consumer.setup.notify_config import NotifyConfig, NotifyRule

RECONCILE_AGENT_PRODUCT: Final = "voxpersona-reconcile"


class Difference(StrEnum):
    MISSING = "missing"  # in the bucket, not in the index
    STALE = "stale"  # in both, size or etag differ
    EXTRA = "extra"  # live in the index, gone from the bucket


class Repair(StrEnum):
    """What ``--repair`` did about one difference."""

    REINDEXED = "reindexed"  # HEAD found it: its real state was written
    TOMBSTONED = "tombstoned"  # HEAD found nothing: the index row was marked deleted
    VANISHED = "vanished"  # missing, but gone by the time of the HEAD: nothing to do


# --- pure -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedObject:
    """One object (version) of a bucket listing; delete markers are never listed."""

    bucket: str
    key: str
    version_id: str
    size: int
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class Mismatch:
    """One difference between a bucket and the index, and its repair once made."""

    kind: Difference
    bucket: str
    key: str
    version_id: str
    listed: ListedObject | None
    indexed: ObjectRecord | None  # the live row (None: no live row)
    repair: Repair | None = None
    # MISSING only: the index's tombstone of this object (version), if it holds one: the
    # index saw the object removed, yet the bucket has it (a delete MinIO undid).
    removed: ObjectRecord | None = None

    def fields(self) -> dict[str, Any]:
        """The ``reconcile --json`` line."""
        fields: dict[str, Any] = {
            "kind": self.kind.value,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "bucket_size": self.listed.size if self.listed else None,
            "bucket_etag": self.listed.etag if self.listed else None,
            "index_size": self.indexed.size if self.indexed else None,
            "index_etag": self.indexed.etag if self.indexed else None,
        }
        if self.removed is not None:
            fields["index_removed_at"] = self.removed.last_event_time.isoformat()
        if self.repair is not None:
            fields["repair"] = self.repair.value
        return fields


def normalise_etag(etag: str | None) -> str | None:
    """ETags without their quotes, as the index stores them."""
    return etag.strip('"') if etag else None


def compare(listed: Iterable[ListedObject], indexed: Iterable[ObjectRecord]) -> list[Mismatch]:
    """The differences between a listing and the index's rows, ordered by (bucket, key,
    version). A tombstone in ``indexed`` is no live row: its object, if listed, is
    MISSING, with the tombstone as the mismatch's ``removed``."""
    in_bucket = {(o.bucket, o.key, o.version_id): o for o in listed}
    in_index: dict[tuple[str, str, str], ObjectRecord] = {}
    tombstones: dict[tuple[str, str, str], ObjectRecord] = {}
    for record in indexed:
        ident = (record.bucket, record.key, record.version_id)
        (tombstones if record.deleted else in_index)[ident] = record
    found: list[Mismatch] = []
    for ident in sorted(in_bucket.keys() | in_index.keys()):
        obj, row = in_bucket.get(ident), in_index.get(ident)
        if row is None:
            removed = tombstones.get(ident)
            found.append(Mismatch(Difference.MISSING, *ident, obj, None, removed=removed))
            continue
        if obj is None:
            kind = Difference.EXTRA
        elif obj.size != row.size or normalise_etag(obj.etag) != normalise_etag(row.etag):
            kind = Difference.STALE
        else:
            continue
        found.append(Mismatch(kind, *ident, listed=obj, indexed=row))
    return found


KeyFilter = Callable[[str], bool]


def watched(config: NotifyConfig, only: str | None = None) -> dict[str, KeyFilter | None]:
    """The buckets to reconcile, each with the keys its notification rules cover: an
    object no rule publishes has no events to lose, so it is no difference. ``only``: that
    bucket alone (every key, if the file does not watch it)."""
    buckets = {entry.bucket: entry.rules for entry in config.buckets}
    if only is not None:
        rules = buckets.get(only)
        return {only: _covered_by(rules) if rules else None}
    return {bucket: _covered_by(rules) for bucket, rules in buckets.items()}


def _covered_by(rules: Sequence[NotifyRule]) -> KeyFilter:
    creating = [r for r in rules if any(e.startswith("s3:ObjectCreated:") for e in r.events)]

    def covers(key: str) -> bool:
        return any(key.startswith(r.prefix) and key.endswith(r.suffix) for r in creating)

    return covers


def sequencer_at(moment: datetime) -> str:
    """MinIO's sequencer for ``moment``: its nanoseconds since the epoch, in hex."""
    nanoseconds = int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
    return normalise_sequencer(f"{nanoseconds:X}")


def after_sequencer(sequencer: str) -> str:
    """The smallest sequencer newer than ``sequencer``."""
    return normalise_sequencer(f"{int(sequencer or '0', 16) + 1:X}")


@dataclass(frozen=True)
class HeadState:
    """What a HEAD of an object told (``metadata``: the response headers)."""

    version_id: str
    size: int
    etag: str | None
    content_type: str | None
    metadata: Mapping[str, str]
    last_modified: datetime


def found_moment(head: HeadState, listed: ListedObject | None) -> datetime:
    """When the found content was written: the listing's time (milliseconds) if the
    listing saw this same content, else the HEAD's (seconds: HTTP dates have no more)."""
    if listed is not None and normalise_etag(listed.etag) == normalise_etag(head.etag):
        return listed.last_modified
    return head.last_modified


def found_sequencer(moment: datetime, removed: ObjectRecord | None, stamp: datetime) -> str:
    """The found repair's sequencer: its content's ``moment``, so that any later real
    event wins. But where the index holds a removal at least as new (``removed``, the
    tombstone), the HEAD that found the object after that removal makes the bucket the
    truth (MinIO undid the delete): then ``stamp`` (the clock read before the HEAD), and at
    least one past the removal, so the repair wins over it. Pure."""
    own = sequencer_at(moment)
    if removed is None or removed.sequencer < own:
        return own
    return max(sequencer_at(stamp), after_sequencer(removed.sequencer))


def agent(run_id: str) -> str:
    return f"{RECONCILE_AGENT_PRODUCT}/{run_id}"


def found_event(
    bucket: str,
    key: str,
    head: HeadState,
    moment: datetime,
    run_id: str,
    *,
    sequencer: str | None = None,
) -> ObjectEvent:
    """The repair that writes the object's real state, as of ``moment`` (its sequencer
    that of ``moment`` unless given: see ``found_sequencer``)."""
    metadata = user_metadata_from_record(head.metadata)
    return ObjectEvent(
        bucket=bucket,
        key=key,
        version_id=head.version_id,
        event_name=RECONCILE_FOUND,
        kind=EventKind.RECONCILED,
        event_time=moment,
        sequencer=sequencer or sequencer_at(moment),
        size=head.size,
        etag=normalise_etag(head.etag),
        content_type=head.content_type,
        user_metadata=metadata,
        user_id=user_id_for(key, metadata),
        user_agent=agent(run_id),
    )


def gone_event(row: ObjectRecord, stamp: datetime, run_id: str) -> ObjectEvent:
    """The repair that tombstones ``row``: stamped ``stamp`` (read before the HEAD that
    found nothing) and at least one past the row's own sequencer."""
    sequencer = max(sequencer_at(stamp), after_sequencer(row.sequencer))
    return ObjectEvent(
        bucket=row.bucket,
        key=row.key,
        version_id=row.version_id,
        event_name=RECONCILE_GONE,
        kind=EventKind.RECONCILED,
        event_time=stamp,
        sequencer=sequencer,
        user_agent=agent(run_id),
    )


def minio_message(event: ObjectEvent) -> bytes:
    """``event`` as MinIO would publish it (``parse_message`` gives it back)."""
    record = {
        "eventVersion": "2.0",
        "eventSource": f"{RECONCILE_AGENT_PRODUCT}",
        "eventTime": event.event_time.isoformat(),
        "eventName": event.event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": event.bucket},
            "object": {
                # Go's url.QueryEscape, as MinIO encodes keys.
                "key": quote_plus(event.key, safe=""),
                "size": event.size,
                "eTag": event.etag,
                "contentType": event.content_type,
                "userMetadata": {f"X-Amz-Meta-{k}": v for k, v in event.user_metadata.items()},
                "versionId": event.version_id,
                "sequencer": event.sequencer,
            },
        },
        "source": {"userAgent": event.user_agent},
    }
    message = {
        "EventName": event.event_name,
        "Key": f"{event.bucket}/{event.key}",
        "Records": [record],
    }
    return json.dumps(message, ensure_ascii=False).encode()


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class ReconcileReport:
    run_id: str
    buckets: list[str] = field(default_factory=list)
    listed: int = 0
    indexed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    repaired: BatchResult | None = None
    queued_for_processing: int = 0

    def summary(self) -> dict[str, Any]:
        by_kind = {kind.value: 0 for kind in Difference}
        for mismatch in self.mismatches:
            by_kind[mismatch.kind.value] += 1
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            "buckets": self.buckets,
            "listed": self.listed,
            "indexed": self.indexed,
            **by_kind,
        }
        if self.repaired is not None:
            outcomes = {repair.value: 0 for repair in Repair}
            for mismatch in self.mismatches:
                if mismatch.repair is not None:
                    outcomes[mismatch.repair.value] += 1
            summary.update(
                outcomes,
                journaled=self.repaired.journaled,
                objects_changed=self.repaired.objects_changed,
                superseded=self.repaired.stale_ignored,
                queued_for_processing=self.queued_for_processing,
            )
        return summary
