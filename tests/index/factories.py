"""Events for index tests, built directly (no JSON) with readable defaults."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Final

from consumer.events import RECONCILE_FOUND, EventKind, ObjectEvent
from consumer.index.decisions import DELETE_ALL_VERSIONS

T0: Final = datetime(2026, 1, 1, tzinfo=UTC)

NAMES: Final = {
    EventKind.CREATED: "s3:ObjectCreated:Put",
    EventKind.METADATA_CHANGED: "s3:ObjectCreated:PutTagging",
    EventKind.REMOVED: "s3:ObjectRemoved:Delete",
    EventKind.EXPIRED: "s3:ObjectRemoved:Delete",
    EventKind.NOOP: "s3:ObjectRemoved:NoOP",
    EventKind.OTHER: "s3:ObjectAccessed:Get",
    EventKind.RECONCILED: RECONCILE_FOUND,
}
_CONTENT_KINDS: Final = {EventKind.CREATED}


def event(
    kind: EventKind = EventKind.CREATED,
    *,
    seq: int,
    bucket: str = "bkt",
    key: str = "user_1/a.ogg",
    version_id: str = "",
    event_name: str | None = None,
    size: int | None = None,
    etag: str | None = None,
    content_type: str | None = None,
    metadata: dict[str, str] | None = None,
    user_id: str | None = "1",
    at: datetime | None = None,
) -> ObjectEvent:
    """An event whose sequencer is ``seq`` (hex) and whose time is T0 + ``seq`` seconds.

    Creations get a size/etag/content type derived from ``seq`` unless given; other kinds
    carry none, as MinIO's removal events do.
    """
    content = kind in _CONTENT_KINDS or (event_name or NAMES[kind]) == RECONCILE_FOUND
    return ObjectEvent(
        bucket=bucket,
        key=key,
        version_id=version_id,
        event_name=event_name or NAMES[kind],
        kind=kind,
        event_time=at or T0 + timedelta(seconds=seq),
        sequencer=f"{seq:X}" if seq >= 0 else "",
        size=size if size is not None or not content else 100 * max(seq, 0),
        etag=etag if etag is not None or not content else f"etag-{seq}",
        content_type=content_type if content_type is not None or not content else "audio/ogg",
        user_metadata=metadata or {},
        user_id=user_id,
        principal_id="minioadmin",
        source_ip="127.0.0.1",
        user_agent="Internal: [ILM-Expiry]" if kind is EventKind.EXPIRED else "MinIO (test)",
        request_id=None if kind is EventKind.EXPIRED else f"req-{seq}",
    )


KINDS = (
    EventKind.CREATED,
    EventKind.CREATED,
    EventKind.CREATED,
    EventKind.METADATA_CHANGED,
    EventKind.REMOVED,
    EventKind.NOOP,
    EventKind.OTHER,
)


def history(seed: int = 5, count: int = 700) -> list[ObjectEvent]:
    """A mix like the indexer's: owners' folders and shared keys, versions, removals,
    force deletes, journal-only events, redeliveries and late events."""
    rng = random.Random(seed)
    events: list[ObjectEvent] = []
    for seq in range(1, count + 1):
        user = rng.randint(1, 4)
        owner = str(user) if rng.random() < 0.85 else str(rng.randint(5, 6))
        folder = f"user_{user}/" if rng.random() < 0.8 else "shared/"
        kind = rng.choice(KINDS)
        name = DELETE_ALL_VERSIONS if kind is EventKind.REMOVED and rng.random() < 0.2 else None
        events.append(
            event(
                kind,
                seq=seq,
                bucket=rng.choice(("bkt", "bkt", "b2")),
                key=f"{folder}f{rng.randint(1, 40)}.ogg",
                version_id=rng.choice(("", "", "v1", "v2")),
                event_name=name,
                user_id=owner if kind is not EventKind.REMOVED else None,
                metadata={"lang": rng.choice(("ru", "en"))} if kind is EventKind.CREATED else None,
            )
        )
    for _ in range(count // 20):  # redeliveries
        events.insert(rng.randint(0, len(events)), rng.choice(events))
    for _ in range(count // 50):  # late by up to 60 positions
        position = rng.randint(0, len(events) - 1)
        events.insert(min(len(events), position + rng.randint(1, 60)), events.pop(position))
    return events
