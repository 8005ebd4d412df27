"""The event model: what one change to one object is (``ObjectEvent``), what it means
for the index (``EventKind``), and the field rules every decoding path shares (keys,
sequencers, user metadata, user ids, times, agents).

Pure: no I/O, no clock, no settings. Two decoding paths build these events from a Kafka
message value: ``consumer.events.checked`` (pydantic, the reference, which names what is
wrong with a malformed message) and ``consumer.events.fast`` (msgspec, for valid
messages); ``consumer.events.parse_message`` tries the fast one first. What MinIO really
sends (and the traps: URL-encoded keys, ILM expiry disguised as a delete, omitted zero
sizes, NoOP deletes, sequencers as hex strings) was checked against MinIO's source and a
real server (tests/integration/test_minio_to_kafka.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from operator import itemgetter
from typing import Final, Literal, NamedTuple, TypeAlias
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, field_validator

from consumer.errors import InvalidInput

DEFAULT_MAX_BYTES: Final = 1_048_576
# The `source.userAgent` MinIO's lifecycle scanner puts on the deletes it makes.
ILM_EXPIRY_AGENT: Final = "Internal: [ILM-Expiry]"
# The product token the retention sweeper adds to its user agent, followed by "/<policy>".
RETENTION_AGENT_PRODUCT: Final = "voxpersona-retention"
# A sequencer is the hex of a nanosecond timestamp (16 digits today); 32 digits leave room
# for AWS's longer, opaque ones while keeping one fixed width for string comparison.
SEQUENCER_WIDTH: Final = 32

ErrorClass = Literal[
    "empty",  # no value, or a message with an empty Records list
    "oversized",  # more bytes than max_bytes
    "not_utf8",
    "not_json",
    "wrong_schema",  # valid JSON, but not an event (missing or mistyped fields)
    "key_mismatch",  # MinIO's envelope Key disagrees with the record's bucket/key
    "name_mismatch",  # MinIO's envelope EventName disagrees with the record's eventName
]


class EventKind(StrEnum):
    """What an event means for the index, independent of the server's naming."""

    CREATED = "created"
    METADATA_CHANGED = "metadata_changed"
    REMOVED = "removed"
    EXPIRED = "expired"
    NOOP = "noop"
    OTHER = "other"
    # Written by `reconcile --repair`, not by the server: the object's real state, learned
    # from a bucket listing and a HEAD (RECONCILE_FOUND) or its absence (RECONCILE_GONE).
    RECONCILED = "reconciled"


# The event names of reconcile's repairs (see consumer/repair/compare.py).
RECONCILE_FOUND: Final = "s3:ObjectCreated:Reconciled"
RECONCILE_GONE: Final = "s3:ObjectRemoved:Reconciled"


_KIND_BY_NAME: Final[Mapping[str, EventKind]] = {
    "s3:ObjectCreated:Put": EventKind.CREATED,
    "s3:ObjectCreated:Post": EventKind.CREATED,
    "s3:ObjectCreated:Copy": EventKind.CREATED,
    "s3:ObjectCreated:CompleteMultipartUpload": EventKind.CREATED,
    # MinIO files these under ObjectCreated, but the content did not change: they must not
    # start processing again.
    "s3:ObjectCreated:PutTagging": EventKind.METADATA_CHANGED,
    "s3:ObjectCreated:DeleteTagging": EventKind.METADATA_CHANGED,
    "s3:ObjectCreated:PutRetention": EventKind.METADATA_CHANGED,
    "s3:ObjectCreated:PutLegalHold": EventKind.METADATA_CHANGED,
    "s3:ObjectRemoved:Delete": EventKind.REMOVED,
    "s3:ObjectRemoved:DeleteMarkerCreated": EventKind.REMOVED,
    "s3:ObjectRemoved:DeleteAllVersions": EventKind.REMOVED,
    # A DELETE of a key that did not exist.
    "s3:ObjectRemoved:NoOP": EventKind.NOOP,
    RECONCILE_FOUND: EventKind.RECONCILED,
    RECONCILE_GONE: EventKind.RECONCILED,
}
# AWS's own names for tagging changes and lifecycle deletes (MinIO uses the ones above).
_KIND_BY_PREFIX: Final[tuple[tuple[str, EventKind], ...]] = (
    ("s3:ObjectTagging:", EventKind.METADATA_CHANGED),
    ("s3:LifecycleExpiration:", EventKind.EXPIRED),
)

_META_PREFIX: Final = "x-amz-meta-"
_USER_ID_FIELDS: Final = ("user-id", "user_id", "userid")
_USER_KEY_PREFIX: Final = re.compile(r"user_([^/]+)/")
# Go's url.QueryEscape only ever writes "%" followed by two hex digits.
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HEX: Final = re.compile(r"[0-9A-Fa-f]+")
REASON_MAX_CHARS: Final = 200
_RETENTION_AGENT: Final = re.compile(rf"(?:^|\s){RETENTION_AGENT_PRODUCT}/(\S+)")


class MalformedEvent(InvalidInput):
    """A message that is not a usable bucket-notification event; retrying cannot help.

    ``error_class`` is a short machine-readable label (for metrics and the DLQ),
    ``reason`` one line a person can act on.
    """

    def __init__(self, error_class: ErrorClass, reason: str) -> None:
        # Both go to Exception.args so the error survives pickling (e.g. to a worker).
        super().__init__(error_class, reason)
        self.error_class: ErrorClass = error_class
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.error_class}: {self.reason}"


# --- the event model -------------------------------------------------------------------


class ObjectEvent(BaseModel):
    """One change to one object, normalised across MinIO, AWS and Ceph.

    Optional fields are ``None`` when the server did not send them (removal events carry
    no size, eTag, content type or metadata). ``sequencer`` is "" when absent: such
    events cannot be ordered by sequencer and callers order them by ``event_time``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str = Field(min_length=1)
    key: str
    version_id: str = ""
    event_name: str = Field(min_length=1)
    kind: EventKind
    event_time: datetime
    sequencer: str = ""
    size: int | None = Field(default=None, ge=0)
    etag: str | None = None
    content_type: str | None = None
    user_metadata: dict[str, str] = Field(default_factory=dict)
    user_id: str | None = None
    principal_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    region: str | None = None

    @field_validator("event_name")
    @classmethod
    def _s3_prefixed(cls, value: str) -> str:
        return normalise_event_name(value)

    @field_validator("event_time")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        # A naive time would be read in the consumer host's zone: refuse to guess.
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("event_time must be timezone-aware")
        return value.astimezone(UTC)

    @field_validator("sequencer")
    @classmethod
    def _normalised_sequencer(cls, value: str) -> str:
        try:
            return normalise_sequencer(value)
        except MalformedEvent as exc:
            # pydantic only turns ValueError into a ValidationError.
            raise ValueError(exc.reason) from None

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        """(bucket, key, version_id, event_name, sequencer): equal for redeliveries.

        The request id is not part of it: ILM deletes have none.
        """
        return (self.bucket, self.key, self.version_id, self.event_name, self.sequencer)

    def is_newer_than(self, sequencer: str) -> bool:
        """Whether this event happened after the one that recorded ``sequencer``.

        Compares numerically (via the normalised form). Equal is not newer, so a
        redelivery does not win over itself. A missing sequencer ("") sorts before every
        real one: an event without one is never newer, and any event with one is newer
        than a record without; callers break such ties with ``event_time``.
        Only meaningful for events of the same bucket and key.

        Raises MalformedEvent if ``sequencer`` is not hexadecimal.
        """
        return self.sequencer > normalise_sequencer(sequencer)

    def facts(self) -> EventFacts:
        """This event's fields as an ``EventFacts`` (no validation: they are valid)."""
        return EventFacts._make(_FIELD_VALUES(self.__dict__))

    def __hash__(self) -> int:
        # The default hash of a frozen model hashes every field and fails on the metadata
        # dict; the identity is hashable and equal events have equal identities.
        return hash(self.identity)


class EventFacts(NamedTuple):
    """An ObjectEvent's fields, same names, types and order, in a plain named tuple: for
    code that reads every field of thousands of events, the index's write path.

    Why: a pydantic model answers each attribute read through BaseModel's ``__getattr__``
    hook, which keeps CPython 3.11 from specialising the read: about 50 ns a read in a
    loop, against 28 ns for a named tuple's field, and a batch reads each of its events'
    fields about a hundred times.
    Made by ``ObjectEvent.facts`` (or from an event's fields sent to another process),
    never from unchecked input.
    """

    bucket: str
    key: str
    version_id: str
    event_name: str
    kind: EventKind
    event_time: datetime
    sequencer: str
    size: int | None
    etag: str | None
    content_type: str | None
    user_metadata: dict[str, str]
    user_id: str | None
    principal_id: str | None
    source_ip: str | None
    user_agent: str | None
    request_id: str | None
    region: str | None

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        """See ObjectEvent.identity."""
        return (self.bucket, self.key, self.version_id, self.event_name, self.sequencer)

    def is_newer_than(self, sequencer: str) -> bool:
        """See ObjectEvent.is_newer_than."""
        return self.sequencer > normalise_sequencer(sequencer)

    def __hash__(self) -> int:
        # As ObjectEvent's: a tuple's hash would fail on the metadata dict.
        return hash(self.identity)


_FIELD_VALUES: Final = itemgetter(*EventFacts._fields)

# Either form of an event, for the rules that read an event's fields and nothing else.
AnyEvent: TypeAlias = ObjectEvent | EventFacts


# --- pure helpers ----------------------------------------------------------------------


def writes_content(event: AnyEvent) -> bool:
    """Whether the event stands for new content of its object: a created event, or a
    reconcile repair that found the object (and so stands for the create that was lost)."""
    return event.kind is EventKind.CREATED or (
        event.kind is EventKind.RECONCILED and event.event_name == RECONCILE_FOUND
    )


def removes_object(event: AnyEvent) -> bool:
    """Whether the event removes its object: a removal, an expiry, or a reconcile repair
    that found the object gone."""
    return event.kind in (EventKind.REMOVED, EventKind.EXPIRED) or (
        event.kind is EventKind.RECONCILED and event.event_name == RECONCILE_GONE
    )


def event_kind_of(event_name: str, user_agent: str | None) -> EventKind:
    """Map an S3/MinIO event name (with or without "s3:") to an EventKind. Never raises.

    MinIO has no event name for lifecycle expiry: it sends an ordinary removal whose user
    agent is ``Internal: [ILM-Expiry]``, so the agent is needed to tell the two apart. The
    retention sweeper's deletions (its user agent names a policy) are expiries too.
    """
    name = normalise_event_name(event_name)
    kind = _KIND_BY_NAME.get(name)
    if kind is None:
        kind = next((k for prefix, k in _KIND_BY_PREFIX if name.startswith(prefix)), None)
    if kind is EventKind.REMOVED and (
        _is_ilm_expiry(user_agent) or retention_policy_of(user_agent) is not None
    ):
        return EventKind.EXPIRED
    return kind or EventKind.OTHER


def normalise_sequencer(raw: str | None) -> str:
    """Upper-case hex, left-padded with zeros to 32 digits; "" when missing or empty.

    After this, string comparison equals numeric comparison, also between servers that
    send different lengths. Raises MalformedEvent (wrong_schema) for non-hex input or a
    value wider than 32 significant digits.
    """
    if not raw:
        return ""
    if _HEX.fullmatch(raw) is None:
        raise MalformedEvent("wrong_schema", f"sequencer {quoted(raw)} is not hexadecimal")
    digits = raw.lstrip("0") or "0"
    if len(digits) > SEQUENCER_WIDTH:
        raise MalformedEvent(
            "wrong_schema",
            f"sequencer {quoted(raw)} exceeds {SEQUENCER_WIDTH} hex digits",
        )
    return digits.upper().rjust(SEQUENCER_WIDTH, "0")


def decode_key(raw: str) -> str:
    """Undo Go's ``url.QueryEscape`` on ``s3.object.key`` ("+" is a space, "%2B" a plus).

    Raises MalformedEvent (wrong_schema) for a "%" not followed by two hex digits or
    escapes that are not UTF-8: QueryEscape never writes those, so the key was damaged
    and guessing would index the wrong object.
    """
    if _BAD_ESCAPE.search(raw):
        raise MalformedEvent("wrong_schema", f"s3.object.key {quoted(raw)} has a bad % escape")
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise MalformedEvent(
            "wrong_schema", f"s3.object.key {quoted(raw)} does not decode to UTF-8"
        ) from None


def user_metadata_from_record(raw: Mapping[str, str] | None) -> dict[str, str]:
    """The user-defined ``x-amz-meta-*`` entries, prefix stripped, names lower-cased.

    MinIO mixes them with system headers ("content-type") in any casing; AWS sends no
    metadata at all (empty dict). If two entries differ only in case, the one whose
    original name sorts last wins, so the result does not depend on JSON order.
    Never raises.
    """
    if not raw:
        return {}
    # One uploader sends the same names, in the same order, with every object: what to
    # keep and under which name depends on those names alone, so it is worked out once per
    # set of names, and each event only copies the values (a third of the cost).
    names = tuple(raw)
    plan = _METADATA_PLANS.get(names)
    if plan is None:
        plan = _metadata_plan(names)
    metadata: dict[str, str] = {}
    for name, short in plan:
        metadata[short] = raw[name]
    return metadata


# Bounded in entries, and in names and characters per entry (well under 1 MB in all), so
# that messages with ever new, many or huge names cannot make it grow: such names are
# simply planned again each time.
_METADATA_PLANS: Final[dict[tuple[str, ...], tuple[tuple[str, str], ...]]] = {}
_METADATA_PLANS_MAX: Final = 128
_METADATA_PLAN_MAX_NAMES: Final = 16
_METADATA_PLAN_MAX_CHARS: Final = 1024


def _metadata_plan(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The (original name, result name) pairs for these metadata names, in sorted order of
    the original names so that a later case-duplicate overwrites an earlier one."""
    plan: list[tuple[str, str]] = []
    for name in sorted(names):
        lowered = name.lower()
        if lowered.startswith(_META_PREFIX) and len(lowered) > len(_META_PREFIX):
            plan.append((name, lowered[len(_META_PREFIX) :]))
    planned = tuple(plan)
    if len(names) <= _METADATA_PLAN_MAX_NAMES and sum(map(len, names)) <= _METADATA_PLAN_MAX_CHARS:
        if len(_METADATA_PLANS) >= _METADATA_PLANS_MAX:
            _METADATA_PLANS.clear()  # start over rather than keep stale sets forever
        _METADATA_PLANS[names] = planned
    return planned


def user_id_for(key: str, metadata: Mapping[str, str]) -> str | None:
    """The owning user: metadata ``user-id`` (or ``user_id``, ``userid``), else the
    ``<id>`` of a key starting with ``user_<id>/``, else None. Never raises.

    Metadata wins because it is set explicitly by the uploader; the prefix is a convention.
    """
    lowered = {name.lower(): value for name, value in metadata.items()}
    for field in _USER_ID_FIELDS:
        value = lowered.get(field, "").strip()
        if value:
            return value
    match = _USER_KEY_PREFIX.match(key)
    return match.group(1) if match else None


def event_time_of(raw: str) -> datetime:
    """``eventTime`` as an aware UTC datetime; MalformedEvent (wrong_schema) when it is not
    ISO-8601 or has no UTC offset."""
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise MalformedEvent("wrong_schema", f"eventTime {quoted(raw)} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise MalformedEvent("wrong_schema", f"eventTime {quoted(raw)} has no UTC offset")
    return parsed.astimezone(UTC)


def user_agent_of(user_agent: str | None, host: str | None) -> str | None:
    """The event's user agent; both decoders read it through this one rule."""
    if user_agent:
        return user_agent
    # Older MinIO releases put "Internal: [ILM-EXPIRY]" in source.host instead.
    if host and host.startswith("Internal:"):
        return host
    return None


def _is_ilm_expiry(user_agent: str | None) -> bool:
    return user_agent is not None and user_agent.strip().lower() == ILM_EXPIRY_AGENT.lower()


def retention_policy_of(user_agent: str | None) -> str | None:
    """The policy named by the retention sweeper's user agent token, if it is one."""
    if not user_agent:
        return None
    match = _RETENTION_AGENT.search(user_agent)
    return match.group(1) if match else None


def normalise_event_name(name: str) -> str:
    # AWS writes "ObjectCreated:Put", MinIO "s3:ObjectCreated:Put".
    return name if name.startswith("s3:") else f"s3:{name}"


def none_if_empty(value: str | None) -> str | None:
    return value or None


def quoted(text: str) -> str:
    # Keep reasons one readable line even when a key or value is huge.
    if len(text) <= REASON_MAX_CHARS:
        return repr(text)
    return repr(text[:REASON_MAX_CHARS]) + "…"
