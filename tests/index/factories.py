"""Events for index tests, built directly (no JSON) with readable defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from consumer.events import RECONCILE_FOUND, EventKind, ObjectEvent

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
