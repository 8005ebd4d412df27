"""The hot path of ``consumer.events.parse_message``: msgspec structs, strict, for valid events.

Pydantic's validation of the wire shapes (``consumer.events.checked``) and of
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
from typing import Annotated, Any, Final, NoReturn

import msgspec

from consumer.events import model as ev

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_Size = Annotated[int, msgspec.Meta(ge=0)]


# Unknown fields are skipped by msgspec (a newer server must not break the consumer), as
# by the pydantic shapes' extra="ignore".


class _Identity(msgspec.Struct, gc=False):
    principal_id: str | None = msgspec.field(default=None, name="principalId")


class _Request(msgspec.Struct, gc=False):
    principal_id: str | None = msgspec.field(default=None, name="principalId")
    region: str | None = None
    source_ip: str | None = msgspec.field(default=None, name="sourceIPAddress")


class _Response(msgspec.Struct, gc=False):
    request_id: str | None = msgspec.field(default=None, name="x-amz-request-id")


class _Source(msgspec.Struct, gc=False):
    host: str | None = None
    user_agent: str | None = msgspec.field(default=None, name="userAgent")


class _Bucket(msgspec.Struct, gc=False):
    name: _NonEmpty


class _Object(msgspec.Struct, gc=False):
    key: str
    size: _Size | None = None
    etag: str | None = msgspec.field(default=None, name="eTag")
    content_type: str | None = msgspec.field(default=None, name="contentType")
    user_metadata: dict[str, str] | None = msgspec.field(default=None, name="userMetadata")
    version_id: str | None = msgspec.field(default=None, name="versionId")
    sequencer: str | None = None


class _S3(msgspec.Struct, gc=False):
    bucket: _Bucket
    object: _Object


class _Record(msgspec.Struct, gc=False):
    event_name: _NonEmpty = msgspec.field(name="eventName")
    event_time: str = msgspec.field(name="eventTime")
    s3: _S3
    aws_region: str | None = msgspec.field(default=None, name="awsRegion")
    user_identity: _Identity | None = msgspec.field(default=None, name="userIdentity")
    request_parameters: _Request | None = msgspec.field(default=None, name="requestParameters")
    response_elements: _Response | None = msgspec.field(default=None, name="responseElements")
    source: _Source | None = None


class _Message(msgspec.Struct, gc=False):
    records: list[_Record] = msgspec.field(name="Records")
    event_name: str | None = msgspec.field(default=None, name="EventName")
    key: str | None = msgspec.field(default=None, name="Key")


_DECODER: Final = msgspec.json.Decoder(_Message, strict=True)
_EMPTY_REQUEST: Final = _Request()
_USER_ID_FIELDS: Final = ("user-id", "user_id", "userid")
# event_kind_of is pure and sees few distinct (event name, user agent) pairs.
_classify: Final = functools.lru_cache(maxsize=1024)(ev.event_kind_of)


class _AllFieldsSet(set[str]):
    """The ``__pydantic_fields_set__`` of an ObjectEvent given every field, shared by all the
    events this module builds instead of a new set for each (a tenth of the building).

    Pydantic reads it and copies it before changing it (``model_copy``); the copies, also
    those pickling makes, are plain sets. Changing the shared one itself is refused, since
    that would change it for every event.
    """

    __slots__ = ()

    def _read_only(self, *_: object) -> NoReturn:
        raise TypeError("the fields set of a decoded ObjectEvent is shared and read-only")

    add = discard = remove = pop = clear = update = _read_only
    intersection_update = difference_update = symmetric_difference_update = _read_only
    __ior__ = __iand__ = __isub__ = __ixor__ = _read_only

    def __copy__(self) -> set[str]:
        return set(self)

    def __deepcopy__(self, memo: dict[int, object]) -> set[str]:
        return set(self)

    def __reduce__(self) -> tuple[type[set[str]], tuple[list[str]]]:
        return (set, (list(self),))


# The ObjectEvent fields, for building one without running pydantic's validators again on
# values this module has already checked and normalised exactly as they would.
_FIELDS_SET: Final = _AllFieldsSet(ev.ObjectEvent.model_fields)
_new: Final = object.__new__
_set: Final = object.__setattr__
# Module-level names for what every event calls: a global lookup instead of an attribute
# lookup on the events module, per call.
_ObjectEvent: Final = ev.ObjectEvent
_OTHER: Final = ev.EventKind.OTHER
_CREATED: Final = ev.EventKind.CREATED
_user_agent_of: Final = ev.user_agent_of
_user_metadata: Final = ev.user_metadata_from_record
_event_time_of: Final = ev.event_time_of
_normalise_sequencer: Final = ev.normalise_sequencer


def decode_fast(value: bytes | None, max_bytes: int) -> list[ev.ObjectEvent] | None:
    """The events of a valid message, or None: then the pydantic path decides."""
    if not value or len(value) > max_bytes or b"\\u0000" in value:
        # JSON writes a NUL only as "\u0000"; the checked path refuses it.
        return None
    try:
        # ASCII bytes are valid UTF-8, so msgspec reads them as they are. Anything else is
        # decoded to str first, for the stdlib's UTF-8 check also inside fields msgspec
        # skips without checking; isascii costs a tenth of that decode.
        message = _DECODER.decode(value if value.isascii() else value.decode("utf-8"))
    except (UnicodeDecodeError, msgspec.DecodeError, RecursionError):
        return None
    if not message.records:
        return None
    envelope_key = message.key
    envelope_name = message.event_name
    if envelope_name is not None:
        envelope_name = _s3_name(envelope_name)
    built = []
    try:
        for record in message.records:
            event = _event(record)
            values = event.__dict__
            if envelope_key is not None and envelope_key != f"{values['bucket']}/{values['key']}":
                return None
            if envelope_name is not None and envelope_name != values["event_name"]:
                return None
            built.append(event)
    except ev.MalformedEvent:
        return None
    return built


def _event(record: _Record) -> ev.ObjectEvent:
    """As ``consumer.events.checked._event_from_record``, from the msgspec shapes."""
    obj = record.s3.object
    source = record.source
    user_agent = None if source is None else _user_agent_of(source.user_agent, source.host)
    event_name = record.event_name
    kind = _classify(event_name, user_agent)
    key = _key(obj.key)
    if not key and kind is not _OTHER:
        raise ev.MalformedEvent("wrong_schema", "s3.object.key is empty")
    metadata = _user_metadata(obj.user_metadata)
    request = record.request_parameters or _EMPTY_REQUEST
    identity = record.user_identity
    response = record.response_elements
    size = obj.size
    if size is None and kind is _CREATED:
        size = 0  # MinIO omits a zero size (omitempty)
    etag = obj.etag
    # What ObjectEvent.model_construct does for a complete set of fields, without its
    # per-field default handling (a third of the fast path's time): every value here is
    # already what ObjectEvent's validators would make of it.
    return assembled(
        {
            "bucket": record.s3.bucket.name,
            "key": key,
            "version_id": obj.version_id or "",
            "event_name": event_name if event_name.startswith("s3:") else f"s3:{event_name}",
            "kind": kind,
            "event_time": _event_time_of(record.event_time),
            "sequencer": _normalise_sequencer(obj.sequencer),
            "size": size,
            "etag": (etag.strip('"') or None) if etag else None,
            "content_type": obj.content_type or None,
            "user_metadata": metadata,
            "user_id": _user_id(key, metadata),
            "principal_id": (identity.principal_id if identity else None)
            or request.principal_id
            or None,
            "source_ip": request.source_ip or None,
            "user_agent": user_agent,
            "request_id": (response.request_id if response else None) or None,
            "region": record.aws_region or request.region or None,
        }
    )


def assembled(fields: dict[str, Any]) -> ev.ObjectEvent:
    """An ObjectEvent of ``fields`` (every field, in ObjectEvent's order), as
    ``model_construct`` would make it but without its per-field default handling (a third
    of the fast path's time): for values already what ObjectEvent's validators would make
    of them (decoded here)."""
    event = _new(_ObjectEvent)
    _set(event, "__dict__", fields)
    _set(event, "__pydantic_fields_set__", _FIELDS_SET)
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def _key(raw: str) -> str:
    """``consumer.events.model.decode_key`` for the common key: MinIO escapes every "/" as
    "%2F"; once those are replaced, a key without "%" or "+" is what unquote_plus would
    return unchanged. Anything else goes through decode_key itself."""
    plain = raw.replace("%2F", "/")
    if "%" in plain or "+" in plain:
        return ev.decode_key(raw)
    return plain


def _user_id(key: str, metadata: dict[str, str]) -> str | None:
    # consumer.events.model.user_id_for without its lower-casing: user_metadata_from_record has
    # lower-cased every name already.
    for name in _USER_ID_FIELDS:
        value = metadata.get(name)
        if value and (value := value.strip()):
            return value
    if key.startswith("user_"):
        return ev.user_id_for(key, {})
    return None


def _s3_name(name: str) -> str:
    return name if name.startswith("s3:") else f"s3:{name}"
