"""The hot path of ``consumer.events.parse_message``: msgspec structs, strict, for valid events.

Pydantic's validation of the wire shapes (``consumer.events._RawMessage``) and of
``ObjectEvent`` costs more per event than everything else the indexer does. This module
decodes the same fields with typed msgspec structs, as strictly (``strict=True``: no "123"
for a size, no 5 for a key; ``min_length``/``ge`` as in the pydantic shapes), and builds
the ``ObjectEvent`` from values it has already checked.

It only ever *accepts*: ``decode_fast`` returns the events, or None when anything is not
exactly right (bad JSON, a wrong type, an empty Records list, a bad key escape, an envelope
mismatch, a number wider than 64 bits, …). ``parse_message`` then runs the pydantic path on
the same bytes, which raises the MalformedEvent with the error class and reason the DLQ has
always seen (or, for the few inputs msgspec refuses and pydantic takes, such as integers
beyond 64 bits, accepts them). So for every input the result is the pydantic path's; the
fast path is the same function, faster on the messages that are valid
(tests/test_event_decoder.py checks the two agree).
"""

from __future__ import annotations

import functools
from typing import Annotated, Final

import msgspec

from consumer import events as ev

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_Size = Annotated[int, msgspec.Meta(ge=0)]


# Unknown fields are skipped by msgspec (a newer server must not break the consumer), as
# by the pydantic shapes' extra="ignore".


class _Identity(msgspec.Struct):
    principal_id: str | None = msgspec.field(default=None, name="principalId")


class _Request(msgspec.Struct):
    principal_id: str | None = msgspec.field(default=None, name="principalId")
    region: str | None = None
    source_ip: str | None = msgspec.field(default=None, name="sourceIPAddress")


class _Response(msgspec.Struct):
    request_id: str | None = msgspec.field(default=None, name="x-amz-request-id")


class _Source(msgspec.Struct):
    host: str | None = None
    user_agent: str | None = msgspec.field(default=None, name="userAgent")


class _Bucket(msgspec.Struct):
    name: _NonEmpty


class _Object(msgspec.Struct):
    key: str
    size: _Size | None = None
    etag: str | None = msgspec.field(default=None, name="eTag")
    content_type: str | None = msgspec.field(default=None, name="contentType")
    user_metadata: dict[str, str] | None = msgspec.field(default=None, name="userMetadata")
    version_id: str | None = msgspec.field(default=None, name="versionId")
    sequencer: str | None = None


class _S3(msgspec.Struct):
    bucket: _Bucket
    object: _Object


class _Record(msgspec.Struct):
    event_name: _NonEmpty = msgspec.field(name="eventName")
    event_time: str = msgspec.field(name="eventTime")
    s3: _S3
    aws_region: str | None = msgspec.field(default=None, name="awsRegion")
    user_identity: _Identity | None = msgspec.field(default=None, name="userIdentity")
    request_parameters: _Request | None = msgspec.field(default=None, name="requestParameters")
    response_elements: _Response | None = msgspec.field(default=None, name="responseElements")
    source: _Source | None = None


class _Message(msgspec.Struct):
    records: list[_Record] = msgspec.field(name="Records")
    event_name: str | None = msgspec.field(default=None, name="EventName")
    key: str | None = msgspec.field(default=None, name="Key")


_DECODER: Final = msgspec.json.Decoder(_Message, strict=True)
_EMPTY_REQUEST: Final = _Request()
_USER_ID_FIELDS: Final = ("user-id", "user_id", "userid")
# classify is pure and sees few distinct (event name, user agent) pairs.
_classify: Final = functools.lru_cache(maxsize=1024)(ev.classify)
# The ObjectEvent fields, for building one without running pydantic's validators again on
# values this module has already checked and normalised exactly as they would.
_FIELDS_SET: Final = frozenset(ev.ObjectEvent.model_fields)
_new: Final = object.__new__
_set: Final = object.__setattr__


def decode_fast(value: bytes | None, max_bytes: int) -> list[ev.ObjectEvent] | None:
    """The events of a valid message, or None: then the pydantic path decides."""
    if not value or len(value) > max_bytes:
        return None
    try:
        # Decoding to str first keeps the stdlib's UTF-8 check, also inside fields
        # msgspec would skip.
        message = _DECODER.decode(value.decode("utf-8"))
    except (UnicodeDecodeError, msgspec.DecodeError, RecursionError):
        return None
    if not message.records:
        return None
    try:
        built = [_event(record) for record in message.records]
    except ev.MalformedEvent:
        return None
    for event in built:
        if message.key is not None and message.key != f"{event.bucket}/{event.key}":
            return None
        if message.event_name is not None and _s3_name(message.event_name) != event.event_name:
            return None
    return built


def _event(record: _Record) -> ev.ObjectEvent:
    """As ``consumer.events._event_from_record``, from the msgspec shapes."""
    obj = record.s3.object
    user_agent = _user_agent(record.source)
    kind = _classify(record.event_name, user_agent)
    key = _key(obj.key)
    if not key and kind is not ev.EventKind.OTHER:
        raise ev.MalformedEvent("wrong_schema", "s3.object.key is empty")
    metadata = ev.user_metadata_from_record(obj.user_metadata)
    request = record.request_parameters or _EMPTY_REQUEST
    identity = record.user_identity.principal_id if record.user_identity else None
    size = obj.size
    if size is None and kind is ev.EventKind.CREATED:
        size = 0  # MinIO omits a zero size (omitempty)
    etag = (obj.etag or "").strip('"')
    response = record.response_elements
    values = {
        "bucket": record.s3.bucket.name,
        "key": key,
        "version_id": obj.version_id or "",
        "event_name": _s3_name(record.event_name),
        "kind": kind,
        "event_time": ev.event_time_of(record.event_time),
        "sequencer": ev.normalise_sequencer(obj.sequencer),
        "size": size,
        "etag": etag or None,
        "content_type": obj.content_type or None,
        "user_metadata": metadata,
        "user_id": _user_id(key, metadata),
        "principal_id": identity or request.principal_id or None,
        "source_ip": request.source_ip or None,
        "user_agent": user_agent,
        "request_id": (response.request_id if response else None) or None,
        "region": record.aws_region or request.region or None,
    }
    return _object_event(values)


def _key(raw: str) -> str:
    """``consumer.events.decode_key`` for the common key: MinIO escapes every "/" as
    "%2F"; once those are replaced, a key without "%" or "+" is what unquote_plus would
    return unchanged. Anything else goes through decode_key itself."""
    plain = raw.replace("%2F", "/")
    if "%" in plain or "+" in plain:
        return ev.decode_key(raw)
    return plain


def _object_event(values: dict[str, object]) -> ev.ObjectEvent:
    # What ObjectEvent.model_construct does for a complete set of fields, without its
    # per-field default handling (a third of the fast path's time): every value here is
    # already what ObjectEvent's validators would make of it.
    event = _new(ev.ObjectEvent)
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", set(_FIELDS_SET))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def _user_id(key: str, metadata: dict[str, str]) -> str | None:
    # consumer.events.user_id_for without its lower-casing: user_metadata_from_record has
    # lower-cased every name already.
    for name in _USER_ID_FIELDS:
        value = metadata.get(name)
        if value and (value := value.strip()):
            return value
    if key.startswith("user_"):
        return ev.user_id_for(key, {})
    return None


def _user_agent(source: _Source | None) -> str | None:
    return None if source is None else ev.user_agent_of(source.user_agent, source.host)


def _s3_name(name: str) -> str:
    return name if name.startswith("s3:") else f"s3:{name}"
