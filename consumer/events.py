"""Bucket-notification events: one Kafka message value in, checked and classified events out.

Pure: no I/O, no clock, no settings. Two message shapes are accepted:

* MinIO's ``{"EventName": ..., "Key": "<bucket>/<key>", "Records": [record]}``;
* plain S3 (AWS, Ceph RGW) ``{"Records": [record, ...]}``.

Records follow the S3 event format 2.x. Unknown fields are ignored so a newer server does
not break the consumer; the fields this module uses are required and type-checked, because
a silently coerced key or size would corrupt the index. What MinIO really sends (and the
traps: URL-encoded keys, ILM expiry disguised as a delete, omitted zero sizes, NoOP
deletes, sequencers as hex strings) was checked against MinIO's source and a real server
(tests/integration/test_minio_to_kafka.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

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


# The event names of reconcile's repairs (see consumer/reconcile.py).
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
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_REASON_MAX_CHARS: Final = 200
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
        return _normalise_event_name(value)

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

    def __hash__(self) -> int:
        # The default hash of a frozen model hashes every field and fails on the metadata
        # dict; the identity is hashable and equal events have equal identities.
        return hash(self.identity)


# --- pure helpers ----------------------------------------------------------------------


def writes_content(event: ObjectEvent) -> bool:
    """Whether the event stands for new content of its object: a created event, or a
    reconcile repair that found the object (and so stands for the create that was lost)."""
    return event.kind is EventKind.CREATED or (
        event.kind is EventKind.RECONCILED and event.event_name == RECONCILE_FOUND
    )


def removes_object(event: ObjectEvent) -> bool:
    """Whether the event removes its object: a removal, an expiry, or a reconcile repair
    that found the object gone."""
    return event.kind in (EventKind.REMOVED, EventKind.EXPIRED) or (
        event.kind is EventKind.RECONCILED and event.event_name == RECONCILE_GONE
    )


def classify(event_name: str, user_agent: str | None) -> EventKind:
    """Map an S3/MinIO event name (with or without "s3:") to an EventKind. Never raises.

    MinIO has no event name for lifecycle expiry: it sends an ordinary removal whose user
    agent is ``Internal: [ILM-Expiry]``, so the agent is needed to tell the two apart. The
    retention sweeper's deletions (its user agent names a policy) are expiries too.
    """
    name = _normalise_event_name(event_name)
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
        raise MalformedEvent("wrong_schema", f"sequencer {_short(raw)} is not hexadecimal")
    digits = raw.lstrip("0") or "0"
    if len(digits) > SEQUENCER_WIDTH:
        raise MalformedEvent(
            "wrong_schema", f"sequencer {_short(raw)} exceeds {SEQUENCER_WIDTH} hex digits"
        )
    return digits.upper().rjust(SEQUENCER_WIDTH, "0")


def decode_key(raw: str) -> str:
    """Undo Go's ``url.QueryEscape`` on ``s3.object.key`` ("+" is a space, "%2B" a plus).

    Raises MalformedEvent (wrong_schema) for a "%" not followed by two hex digits or
    escapes that are not UTF-8: QueryEscape never writes those, so the key was damaged
    and guessing would index the wrong object.
    """
    if _BAD_ESCAPE.search(raw):
        raise MalformedEvent("wrong_schema", f"s3.object.key {_short(raw)} has a bad % escape")
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise MalformedEvent(
            "wrong_schema", f"s3.object.key {_short(raw)} does not decode to UTF-8"
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


# --- wire shapes (private) -------------------------------------------------------------


class _Raw(BaseModel):
    # strict: "123" for a size or 5 for a key is a malformed event, not something to
    # coerce; extra="ignore": fields a newer server adds must not break the consumer.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _RawIdentity(_Raw):
    principal_id: str | None = Field(None, alias="principalId")


class _RawRequest(_Raw):
    principal_id: str | None = Field(None, alias="principalId")
    region: str | None = None
    source_ip: str | None = Field(None, alias="sourceIPAddress")


class _RawResponse(_Raw):
    request_id: str | None = Field(None, alias="x-amz-request-id")


class _RawSource(_Raw):
    host: str | None = None
    user_agent: str | None = Field(None, alias="userAgent")


class _RawBucket(_Raw):
    name: str = Field(min_length=1)


class _RawObject(_Raw):
    key: str
    size: int | None = Field(None, ge=0)
    etag: str | None = Field(None, alias="eTag")
    content_type: str | None = Field(None, alias="contentType")
    user_metadata: dict[str, str] | None = Field(None, alias="userMetadata")
    version_id: str | None = Field(None, alias="versionId")
    sequencer: str | None = None


class _RawS3(_Raw):
    bucket: _RawBucket
    object: _RawObject


class _RawRecord(_Raw):
    event_name: str = Field(alias="eventName", min_length=1)
    event_time: str = Field(alias="eventTime")
    aws_region: str | None = Field(None, alias="awsRegion")
    user_identity: _RawIdentity | None = Field(None, alias="userIdentity")
    request_parameters: _RawRequest | None = Field(None, alias="requestParameters")
    response_elements: _RawResponse | None = Field(None, alias="responseElements")
    s3: _RawS3
    source: _RawSource | None = None


class _RawMessage(_Raw):
    event_name: str | None = Field(None, alias="EventName")
    key: str | None = Field(None, alias="Key")
    records: list[_RawRecord] = Field(alias="Records")


# --- parsing ---------------------------------------------------------------------------


def parse_message(value: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[ObjectEvent]:
    """Parse one Kafka message value into its events (one for MinIO, one or more for S3).

    Raises MalformedEvent, whose ``error_class`` is: empty (None, b"" or an empty Records
    list), oversized (> max_bytes), not_utf8, not_json, wrong_schema (not an object, no
    Records, a required field missing or of the wrong type, bad key/time/sequencer),
    key_mismatch or name_mismatch (MinIO's envelope disagrees with its record).
    """
    fast = _fast.decode_fast(value, max_bytes)
    if fast is not None:
        return fast
    return parse_message_checked(value, max_bytes=max_bytes)


def parse_message_checked(
    value: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[ObjectEvent]:
    """``parse_message`` through pydantic alone: the reference the fast path must equal,
    and the path that names what is wrong with a malformed message."""
    document = _load_json(_decode(value, max_bytes))
    message = _validate_message(document)
    events = [_event_at(index, record) for index, record in enumerate(message.records)]
    for event in events:
        _check_envelope(message, event)
    return events


def _decode(value: bytes | None, max_bytes: int) -> str:
    if not value:
        raise MalformedEvent("empty", "message has no value")
    if len(value) > max_bytes:
        raise MalformedEvent("oversized", f"message has {len(value)} bytes, limit {max_bytes}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEvent("not_utf8", f"byte {exc.start} is not UTF-8") from None


def _load_json(text: str) -> Any:
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise MalformedEvent("not_json", f"invalid JSON: {exc}") from None
    except RecursionError:
        # Deeply nested input exhausts the stack of the stdlib decoder.
        raise MalformedEvent("not_json", "JSON nested too deeply") from None
    # Text only a \u escape can put in a JSON string, and that the index cannot store:
    # half a UTF-16 surrogate pair, which is no character (UTF-8 cannot even encode it;
    # msgspec refuses the message), and NUL, which no S3 server sends (not in a header, a
    # key or a bucket name) and PostgreSQL's text refuses. Only the slow path pays for
    # this look: the fast one leaves every message holding "\u0000" to it.
    if "\\u" in text:
        unstorable = _unstorable_text(document)
        if unstorable == "surrogate":
            raise MalformedEvent(
                "not_json", "a \\u escape is half a surrogate pair, not a character"
            )
        if unstorable == "nul":
            raise MalformedEvent("wrong_schema", "a string holds a NUL character (\\u0000)")
    return document


def _unstorable_text(document: Any) -> Literal["surrogate", "nul", ""]:
    """Whether a string of ``document`` (a name or a value) holds half a surrogate pair
    ("surrogate") or a NUL character ("nul"); "" when none does."""
    # A loop, not recursion: the document may be nested as deep as json.loads could go.
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                return "surrogate"
            if "\x00" in value:
                return "nul"
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return ""


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's decoder accepts them by default.
    raise ValueError(f"{name} is not valid JSON")


def _validate_message(document: Any) -> _RawMessage:
    if not isinstance(document, dict):
        raise MalformedEvent("wrong_schema", f"expected a JSON object, got {_json_type(document)}")
    if document.get("Records") == []:
        raise MalformedEvent("empty", "Records is an empty list")
    try:
        return _RawMessage.model_validate(document)
    except ValidationError as exc:
        raise MalformedEvent("wrong_schema", _describe(exc.errors()[0])) from None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _describe(error: ErrorDetails) -> str:
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    message = error["msg"]
    if error["type"] in {"model_type", "model_attributes_type", "dict_type"}:
        message = "expected a JSON object"  # pydantic would name our private class
    where = where.lstrip(".") or "<root>"
    if len(where) > _REASON_MAX_CHARS:  # a huge metadata name must not make a huge reason
        where = where[:_REASON_MAX_CHARS] + "…"
    return f"{where}: {message}"


def _event_at(index: int, record: _RawRecord) -> ObjectEvent:
    try:
        return _event_from_record(record)
    except MalformedEvent as exc:
        raise MalformedEvent(exc.error_class, f"Records[{index}]: {exc.reason}") from None


def _event_from_record(record: _RawRecord) -> ObjectEvent:
    obj = record.s3.object
    user_agent = _user_agent(record.source)
    kind = classify(record.event_name, user_agent)
    key = decode_key(obj.key)
    if not key and kind is not EventKind.OTHER:
        raise MalformedEvent("wrong_schema", "s3.object.key is empty")
    metadata = user_metadata_from_record(obj.user_metadata)
    request = record.request_parameters or _RawRequest()
    return ObjectEvent(
        bucket=record.s3.bucket.name,
        key=key,
        version_id=obj.version_id or "",
        event_name=record.event_name,
        kind=kind,
        event_time=event_time_of(record.event_time),
        sequencer=normalise_sequencer(obj.sequencer),
        size=_size(obj.size, kind),
        etag=_none_if_empty((obj.etag or "").strip('"')),
        content_type=_none_if_empty(obj.content_type),
        user_metadata=metadata,
        user_id=user_id_for(key, metadata),
        principal_id=_principal_id(record),
        source_ip=_none_if_empty(request.source_ip),
        user_agent=user_agent,
        request_id=_none_if_empty((record.response_elements or _RawResponse()).request_id),
        region=_none_if_empty(record.aws_region) or _none_if_empty(request.region),
    )


def event_time_of(raw: str) -> datetime:
    """``eventTime`` as an aware UTC datetime; MalformedEvent (wrong_schema) when it is not
    ISO-8601 or has no UTC offset."""
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise MalformedEvent("wrong_schema", f"eventTime {_short(raw)} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise MalformedEvent("wrong_schema", f"eventTime {_short(raw)} has no UTC offset")
    return parsed.astimezone(UTC)


def _size(raw: int | None, kind: EventKind) -> int | None:
    # MinIO marshals size with `omitempty`: a creation without size is a zero-byte object
    # (AWS always sends size for creations). Elsewhere absence means "not known".
    if raw is None and kind is EventKind.CREATED:
        return 0
    return raw


def _user_agent(source: _RawSource | None) -> str | None:
    return None if source is None else user_agent_of(source.user_agent, source.host)


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


def _principal_id(record: _RawRecord) -> str | None:
    identity = record.user_identity.principal_id if record.user_identity else None
    request = record.request_parameters.principal_id if record.request_parameters else None
    return _none_if_empty(identity) or _none_if_empty(request)


def _check_envelope(message: _RawMessage, event: ObjectEvent) -> None:
    # MinIO's Kafka producer builds Key as bucket + "/" + the unescaped key and partitions
    # by it; if it disagrees with the record, one of the two was altered on the way.
    if message.key is not None and message.key != f"{event.bucket}/{event.key}":
        raise MalformedEvent(
            "key_mismatch",
            f"envelope Key {_short(message.key)} != {_short(event.bucket + '/' + event.key)}",
        )
    if message.event_name is not None and (
        _normalise_event_name(message.event_name) != event.event_name
    ):
        raise MalformedEvent(
            "name_mismatch",
            f"envelope EventName {_short(message.event_name)} != {_short(event.event_name)}",
        )


def _normalise_event_name(name: str) -> str:
    # AWS writes "ObjectCreated:Put", MinIO "s3:ObjectCreated:Put".
    return name if name.startswith("s3:") else f"s3:{name}"


def _none_if_empty(value: str | None) -> str | None:
    return value or None


def _short(text: str) -> str:
    # Keep reasons one readable line even when a key or value is huge.
    if len(text) <= _REASON_MAX_CHARS:
        return repr(text)
    return repr(text[:_REASON_MAX_CHARS]) + "…"


# At the end, as a module: the fast path uses the helpers above, and either module may be
# imported first.
from consumer import event_decoder as _fast  # noqa: E402
