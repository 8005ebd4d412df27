"""The checked decoding path: one Kafka message value through pydantic's strict wire
shapes into events, or a MalformedEvent that names what is wrong.

Two message shapes are accepted:

* MinIO's ``{"EventName": ..., "Key": "<bucket>/<key>", "Records": [record]}``;
* plain S3 (AWS, Ceph RGW) ``{"Records": [record, ...]}``.

Records follow the S3 event format 2.x. Unknown fields are ignored so a newer server does
not break the consumer; the fields used are required and type-checked, because a silently
coerced key or size would corrupt the index. This path is the reference: the fast path
(consumer/events/fast.py) must give the same events, and every message it does not take
comes here for its verdict.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from consumer.events.model import (
    DEFAULT_MAX_BYTES,
    REASON_MAX_CHARS,
    EventKind,
    MalformedEvent,
    ObjectEvent,
    decode_key,
    event_kind_of,
    event_time_of,
    none_if_empty,
    normalise_event_name,
    normalise_sequencer,
    quoted,
    user_agent_of,
    user_id_for,
    user_metadata_from_record,
)

# Half a UTF-16 surrogate pair: not a character (see _load_json).
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

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
    if len(where) > REASON_MAX_CHARS:  # a huge metadata name must not make a huge reason
        where = where[:REASON_MAX_CHARS] + "…"
    return f"{where}: {message}"


def _event_at(index: int, record: _RawRecord) -> ObjectEvent:
    try:
        return _event_from_record(record)
    except MalformedEvent as exc:
        raise MalformedEvent(exc.error_class, f"Records[{index}]: {exc.reason}") from None


def _event_from_record(record: _RawRecord) -> ObjectEvent:
    obj = record.s3.object
    user_agent = _user_agent(record.source)
    kind = event_kind_of(record.event_name, user_agent)
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
        etag=none_if_empty((obj.etag or "").strip('"')),
        content_type=none_if_empty(obj.content_type),
        user_metadata=metadata,
        user_id=user_id_for(key, metadata),
        principal_id=_principal_id(record),
        source_ip=none_if_empty(request.source_ip),
        user_agent=user_agent,
        request_id=none_if_empty((record.response_elements or _RawResponse()).request_id),
        region=none_if_empty(record.aws_region) or none_if_empty(request.region),
    )


def _size(raw: int | None, kind: EventKind) -> int | None:
    # MinIO marshals size with `omitempty`: a creation without size is a zero-byte object
    # (AWS always sends size for creations). Elsewhere absence means "not known".
    if raw is None and kind is EventKind.CREATED:
        return 0
    return raw


def _user_agent(source: _RawSource | None) -> str | None:
    return None if source is None else user_agent_of(source.user_agent, source.host)


def _principal_id(record: _RawRecord) -> str | None:
    identity = record.user_identity.principal_id if record.user_identity else None
    request = record.request_parameters.principal_id if record.request_parameters else None
    return none_if_empty(identity) or none_if_empty(request)


def _check_envelope(message: _RawMessage, event: ObjectEvent) -> None:
    # MinIO's Kafka producer builds Key as bucket + "/" + the unescaped key and partitions
    # by it; if it disagrees with the record, one of the two was altered on the way.
    if message.key is not None and message.key != f"{event.bucket}/{event.key}":
        raise MalformedEvent(
            "key_mismatch",
            f"envelope Key {quoted(message.key)} != {quoted(event.bucket + '/' + event.key)}",
        )
    if message.event_name is not None and (
        normalise_event_name(message.event_name) != event.event_name
    ):
        raise MalformedEvent(
            "name_mismatch",
            f"envelope EventName {quoted(message.event_name)} != {quoted(event.event_name)}",
        )
