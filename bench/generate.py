"""Synthetic MinIO events, cloned from templates that a real MinIO published.

Pure (no I/O): given the captured messages and a seed, yields the same stream every time.
Starting from real messages rather than a hand-written shape means the benchmark parses
exactly the fields, casing and encoding MinIO sends (``Key`` unescaped in the envelope,
``s3.object.key`` URL-encoded the way Go's ``url.QueryEscape`` does it, metadata in
canonical header casing, removals without size or eTag).

The mix: about 85 % new objects (``s3:ObjectCreated:Put``), 10 % changes to recent
objects (half ``PutTagging``, which MinIO sends with the object's own sequencer, half
overwriting Puts), 5 % ``s3:ObjectRemoved:Delete`` of recent objects. Every event has a
distinct (key, event name, sequencer), so the indexer must journal all of them, and the
generator knows how many live objects and tombstones the index must end up with.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote_plus

PUT: Final = "s3:ObjectCreated:Put"
PUT_TAGGING: Final = "s3:ObjectCreated:PutTagging"
DELETE: Final = "s3:ObjectRemoved:Delete"
TEMPLATE_EVENTS: Final = (PUT, PUT_TAGGING, DELETE)

# Overwrites, taggings and deletes pick among the most recent live objects, as a user
# re-uploading or removing what they just sent would; it also keeps them inside a few
# batches of the original create, which is where ordering bugs would show.
_RECENT_WINDOW: Final = 2_000
_USERS: Final = 5_000
_SESSION_TYPES: Final = ("interview", "meeting", "note", "call")
# Odd names (spaces, "+", "#", non-ASCII) exercise the QueryEscape decoding.
_ODD_NAMES: Final = ("интервью {u}.ogg", "session 1+2 ü {u}.ogg", "voice note #{i} {u}.ogg")


@dataclass(frozen=True)
class Message:
    """One Kafka message as MinIO would produce it."""

    key: bytes
    value: bytes
    bucket: str
    object_key: str
    event_name: str


@dataclass
class _LiveObject:
    key: str
    size: int
    etag: str
    metadata: dict[str, str]
    sequencer: int
    tagged: bool = False  # a PutTagging was sent at the current sequencer


@dataclass
class Tally:
    """What was generated, hence what the index must contain afterwards."""

    by_event: dict[str, int] = field(default_factory=dict)
    created: int = 0  # distinct objects created
    deleted: int = 0  # distinct objects deleted (each leaves one tombstone)

    @property
    def live(self) -> int:
        return self.created - self.deleted

    def count(self, event_name: str) -> None:
        self.by_event[event_name] = self.by_event.get(event_name, 0) + 1


def go_query_escape(text: str) -> str:
    """Go's ``url.QueryEscape``: only ``A-Za-z0-9-_.~`` kept, space as "+"."""
    return quote_plus(text, safe="")


def sequencer_hex(nanoseconds: int) -> str:
    """MinIO's sequencer: the upper-case hex of the event's UnixNano (16 digits today)."""
    return f"{nanoseconds:X}"


def event_time_text(nanoseconds: int) -> str:
    """MinIO's eventTime: ISO-8601 UTC with milliseconds and a "Z"."""
    moment = datetime.fromtimestamp(nanoseconds / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class EventFactory:
    """Yields ``Message``s cloned from ``templates`` (one MinIO message per event name)."""

    def __init__(
        self,
        templates: Mapping[str, Mapping[str, Any]],
        *,
        bucket: str,
        seed: int = 20_261_121,
        start_ns: int | None = None,
    ) -> None:
        missing = [name for name in TEMPLATE_EVENTS if name not in templates]
        if missing:
            raise ValueError(f"templates lack {missing}")
        self._templates = templates
        self._bucket = bucket
        self._rng = random.Random(seed)  # noqa: S311 - reproducible data, not security
        self._clock_ns = start_ns if start_ns is not None else 1_790_000_000 * 10**9
        self._live: list[_LiveObject] = []
        self._serial = 0
        self.tally = Tally()

    def messages(self, count: int) -> Iterator[Message]:
        """``count`` messages, in the order MinIO would publish them."""
        for _ in range(count):
            yield self._next()

    # --- choosing the next event -------------------------------------------------------

    def _next(self) -> Message:
        self._clock_ns += self._rng.randint(100_000, 4_000_000)
        roll = self._rng.random()
        if roll < 0.85 or not self._live:
            return self._put(self._new_object())
        if roll < 0.90:
            target = self._recent()
            if not target.tagged:
                return self._tagging(target)
        if roll < 0.95:
            return self._put(self._overwrite(self._recent()))
        return self._delete(self._pop_recent())

    def _recent_index(self) -> int:
        return self._rng.randrange(max(0, len(self._live) - _RECENT_WINDOW), len(self._live))

    def _recent(self) -> _LiveObject:
        return self._live[self._recent_index()]

    def _pop_recent(self) -> _LiveObject:
        index = self._recent_index()
        self._live[index], self._live[-1] = self._live[-1], self._live[index]
        return self._live.pop()

    # --- object state ------------------------------------------------------------------

    def _new_object(self) -> _LiveObject:
        self._serial += 1
        user = self._rng.randint(1, _USERS)
        day = datetime.fromtimestamp(self._clock_ns / 1e9, tz=UTC).date().isoformat()
        obj = _LiveObject(
            key=f"user_{user}/{day}/{self._file_name()}",
            size=0,
            etag="",
            metadata={},
            sequencer=0,
        )
        self._refresh_content(obj, user)
        self._live.append(obj)
        self.tally.created += 1
        return obj

    def _file_name(self) -> str:
        name = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        if self._rng.random() < 0.08:
            pattern = self._rng.choice(_ODD_NAMES)
            return pattern.format(u=name[:8], i=self._serial)
        return f"{name}.ogg"

    def _overwrite(self, obj: _LiveObject) -> _LiveObject:
        self._refresh_content(obj, int(obj.metadata["X-Amz-Meta-User-Id"]))
        return obj

    def _refresh_content(self, obj: _LiveObject, user: int) -> None:
        """A new upload of ``obj``: new size, eTag, metadata and sequencer."""
        obj.size = max(1, int(self._rng.lognormvariate(12.5, 1.2)))
        obj.etag = f"{self._rng.getrandbits(128):032x}"
        obj.metadata = {
            "X-Amz-Meta-Session-Type": self._rng.choice(_SESSION_TYPES),
            "X-Amz-Meta-User-Id": str(user),
            "content-type": "audio/ogg",
        }
        if self._rng.random() < 0.3:
            obj.metadata["X-Amz-Meta-Duration-S"] = str(self._rng.randint(5, 3600))
        obj.sequencer = self._clock_ns
        obj.tagged = False

    # --- building messages -------------------------------------------------------------

    def _put(self, obj: _LiveObject) -> Message:
        return self._message(PUT, obj.key, self._content_object(PUT, obj))

    def _tagging(self, obj: _LiveObject) -> Message:
        # MinIO sends a tagging change with the sequencer of the version it tags.
        obj.tagged = True
        return self._message(PUT_TAGGING, obj.key, self._content_object(PUT_TAGGING, obj))

    def _delete(self, obj: _LiveObject) -> Message:
        self.tally.deleted += 1
        template_obj = self._template_record(DELETE)["s3"]["object"]
        fields = {"key": go_query_escape(obj.key), "sequencer": sequencer_hex(self._clock_ns)}
        return self._message(
            DELETE, obj.key, {k: fields.get(k, v) for k, v in template_obj.items()}
        )

    def _content_object(self, event_name: str, obj: _LiveObject) -> dict[str, Any]:
        template_obj = self._template_record(event_name)["s3"]["object"]
        return {
            **template_obj,
            "key": go_query_escape(obj.key),
            "size": obj.size,
            "eTag": obj.etag,
            "contentType": "audio/ogg",
            "userMetadata": dict(obj.metadata),
            "sequencer": sequencer_hex(obj.sequencer),
        }

    def _template_record(self, event_name: str) -> Mapping[str, Any]:
        record: Mapping[str, Any] = self._templates[event_name]["Records"][0]
        return record

    def _message(self, event_name: str, key: str, s3_object: dict[str, Any]) -> Message:
        self.tally.count(event_name)
        record = self._template_record(event_name)
        s3 = record["s3"]
        document = {
            "EventName": event_name,
            "Key": f"{self._bucket}/{key}",
            "Records": [
                {
                    **record,
                    "eventTime": event_time_text(self._clock_ns),
                    "eventName": event_name,
                    "responseElements": {
                        **record.get("responseElements", {}),
                        "x-amz-request-id": f"{self._clock_ns + self._rng.randrange(997):X}",
                    },
                    "s3": {
                        **s3,
                        "bucket": {
                            **s3["bucket"],
                            "name": self._bucket,
                            "arn": f"arn:aws:s3:::{self._bucket}",
                        },
                        "object": s3_object,
                    },
                }
            ],
        }
        # Compact and UTF-8, like Go's json.Marshal.
        value = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return Message(f"{self._bucket}/{key}".encode(), value, self._bucket, key, event_name)
