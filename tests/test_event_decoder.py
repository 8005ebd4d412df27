"""The msgspec fast path (consumer.event_decoder) against the pydantic reference path.

The contract: for every input, ``parse_message`` gives what ``parse_message_checked`` gives
— the same events, or a MalformedEvent of the same class with the same reason. The fast
path may only accept, so each case is also checked to be decided where expected.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.events import (
    DEFAULT_MAX_BYTES,
    MalformedEvent,
    ObjectEvent,
    parse_message,
    parse_message_checked,
)
from consumer.events.fast import decode_fast
from tests.test_events import aws_record, encode, minio_message, minio_record

# The fields the index reads, as paths into one record, with their wire type.
_FIELDS: list[tuple[tuple[str, ...], str]] = [
    (("eventName",), "str"),
    (("eventTime",), "str"),
    (("awsRegion",), "str"),
    (("userIdentity", "principalId"), "str"),
    (("requestParameters", "principalId"), "str"),
    (("requestParameters", "region"), "str"),
    (("requestParameters", "sourceIPAddress"), "str"),
    (("responseElements", "x-amz-request-id"), "str"),
    (("source", "host"), "str"),
    (("source", "userAgent"), "str"),
    (("s3", "bucket", "name"), "str"),
    (("s3", "object", "key"), "str"),
    (("s3", "object", "size"), "int"),
    (("s3", "object", "eTag"), "str"),
    (("s3", "object", "contentType"), "str"),
    (("s3", "object", "userMetadata"), "dict"),
    (("s3", "object", "versionId"), "str"),
    (("s3", "object", "sequencer"), "str"),
    (("s3", "bucket"), "object"),
    (("s3", "object"), "object"),
    (("s3",), "object"),
    (("source",), "object"),
    (("userIdentity",), "object"),
    (("requestParameters",), "object"),
    (("responseElements",), "object"),
]
# Wrong or borderline values for every field: coercible strings and numbers, bools, floats,
# containers, huge and negative integers, empty strings, bad hex, bad escapes, bad times.
_VALUES: list[Any] = [
    None,
    "",
    "123",
    "0",
    "-1",
    "abc",
    "%zz",
    "a+b%2Fc",
    "%2F",
    "ZZ",
    "2025-08-27T10:15:30",
    "2025-08-27T10:15:30+02:00",
    "s3:ObjectRemoved:Delete",
    "ObjectCreated:Put",
    "Internal: [ILM-Expiry]",
    0,
    1,
    -1,
    2**63,
    2**70,
    1.0,
    1.5,
    True,
    False,
    [],
    ["x"],
    {},
    {"x-amz-meta-user-id": 5},
    {"X-Amz-Meta-A": "1", "x-amz-meta-a": "2"},
    {"X-Amz-Meta-User-Id": "  ", "x-amz-meta-userid": " 7 "},
    {"x-amz-meta-user_id": "", "X-AMZ-META-USER-ID": "8"},
    "user_42/x.ogg",
    "user_/x.ogg",
]


def _base_messages() -> list[dict[str, Any]]:
    return [
        minio_message(minio_record()),
        minio_message(minio_record(event_name="s3:ObjectRemoved:Delete")),
        minio_message(minio_record(event_name="s3:ObjectCreated:PutTagging", version_id="v1")),
        minio_message(minio_record(key="user_7/2025-01-01/plain.ogg")),
        {"Records": [aws_record(), aws_record(event_name="ObjectRemoved:Delete")]},
    ]


def _outcome(value: bytes | None, parse: Any) -> tuple[str, Any]:
    try:
        events: list[ObjectEvent] = parse(value, max_bytes=DEFAULT_MAX_BYTES)
    except MalformedEvent as exc:
        return ("error", (exc.error_class, exc.reason))
    return ("events", [event.model_dump() for event in events])


def _assert_same(value: bytes | None) -> None:
    assert _outcome(value, parse_message) == _outcome(value, parse_message_checked)


def _mutations(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The message with one field of its first record removed or replaced."""
    for path, _ in _FIELDS:
        removed = copy.deepcopy(message)
        parent = removed["Records"][0]
        for part in path[:-1]:
            parent = parent.get(part)
            if not isinstance(parent, dict):
                break
        else:
            parent.pop(path[-1], None)
            yield removed
        for value in _VALUES:
            changed = copy.deepcopy(message)
            target = changed["Records"][0]
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
            yield changed


@pytest.mark.parametrize("message", _base_messages(), ids=lambda m: str(len(m["Records"])))
def test_valid_messages_take_the_fast_path_and_equal_the_reference(
    message: dict[str, Any],
) -> None:
    value = encode(message)
    fast = decode_fast(value, DEFAULT_MAX_BYTES)
    assert fast is not None, "a valid message must not fall back to pydantic"
    assert [e.model_dump() for e in fast] == _outcome(value, parse_message_checked)[1]
    assert fast == parse_message_checked(value)
    # Equal events hash equal (the indexer dedupes by identity) and are usable as models.
    assert {hash(e) for e in fast} == {hash(e) for e in parse_message_checked(value)}
    assert fast[0].model_copy(update={"bucket": "other"}).bucket == "other"


@pytest.mark.parametrize("base", range(len(_base_messages())))
def test_every_one_field_mutation_is_decided_as_the_reference_decides(base: int) -> None:
    message = _base_messages()[base]
    decided_fast = 0
    for mutated in _mutations(message):
        value = encode(mutated)
        _assert_same(value)
        decided_fast += decode_fast(value, DEFAULT_MAX_BYTES) is not None
    assert decided_fast > 0  # some mutations (e.g. another awsRegion) stay valid


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"\xff",
        b"[]",
        b"{}",
        b'{"Records": []}',
        b'{"Records": null}',
        b'{"Records": [1]}',
        b"[" * 5000 + b"]" * 5000,
        b"\xef\xbb\xbf{}",  # a BOM
        b'{"Records": [], "Records": [1]}',
    ],
)
def test_message_level_inputs_are_decided_as_the_reference_decides(value: bytes | None) -> None:
    _assert_same(value)


def test_envelope_extra_fields_and_duplicates_are_decided_as_the_reference_decides() -> None:
    base = minio_message(minio_record())
    variants: list[bytes] = []
    for key in ("Key", "EventName"):
        for value in _VALUES:
            changed = copy.deepcopy(base)
            changed[key] = value
            variants.append(encode(changed))
    deep = json.dumps(base)[:-1] + ', "Deep": ' + "[" * 3000 + "]" * 3000 + "}"
    variants.append(deep.encode())
    # A duplicate key: the last one wins in both decoders.
    text = json.dumps(base)
    variants.append(text.replace('"Records":', '"Records": [], "Records":', 1).encode())
    variants.append(text.replace('"eventTime":', '"eventTime": 5, "eventTime":', 1).encode())
    variants.append(text.replace('"size":', '"size": "1", "size":', 1).encode())
    # NaN in an unknown field is not JSON, for either.
    variants.append((text[:-1] + ', "x": NaN}').encode())
    variants.append((text[:-1] + ', "x": 1e400}').encode())
    variants.append(text.replace('"eventVersion": "2.0"', '"eventVersion": "\\ud800"').encode())
    for value in variants:
        _assert_same(value)


def test_oversized_falls_back() -> None:
    value = encode(minio_message(minio_record()))
    assert decode_fast(value, len(value) - 1) is None
    assert decode_fast(value, len(value)) is not None


def test_bad_utf8_inside_a_skipped_field_is_not_utf8_on_both_paths() -> None:
    # msgspec does not check the UTF-8 of fields it skips; a non-ASCII message must still be.
    text = json.dumps(minio_message(minio_record(key="user_7/plain.ogg")))
    assert text.isascii()
    broken = text.replace('"eventVersion": "2.0"', '"eventVersion": "2.0 \xff"').encode("latin-1")
    assert decode_fast(broken, DEFAULT_MAX_BYTES) is None
    assert malformed_class(broken) == "not_utf8"
    _assert_same(broken)


def test_ascii_and_non_ascii_messages_both_take_the_fast_path() -> None:
    ascii_value = encode(minio_message(minio_record(key="user_7/plain.ogg")))
    assert ascii_value.isascii()
    non_ascii = encode(minio_message(minio_record(key="user_7/файл.ogg")))
    assert not non_ascii.isascii()
    for value in (ascii_value, non_ascii):
        fast = decode_fast(value, DEFAULT_MAX_BYTES)
        assert fast is not None
        assert fast == parse_message_checked(value)
    # Valid non-ASCII text in a skipped field is accepted too.
    text = json.dumps(minio_message(minio_record(key="user_7/plain.ogg")), ensure_ascii=False)
    value = text.replace('"eventVersion": "2.0"', '"eventVersion": "2.0 ё"').encode("utf-8")
    assert decode_fast(value, DEFAULT_MAX_BYTES) == parse_message_checked(value)


def malformed_class(value: bytes) -> str:
    with pytest.raises(MalformedEvent) as info:
        parse_message(value)
    return info.value.error_class


def test_the_shared_fields_set_is_read_only_and_copies_are_plain_sets() -> None:
    value = encode(minio_message(minio_record()))
    [event] = parse_message(value)
    [reference] = parse_message_checked(value)
    assert event.model_fields_set == reference.model_fields_set
    with pytest.raises(TypeError):
        event.model_fields_set.add("bucket")
    with pytest.raises(TypeError):
        event.model_fields_set.discard("bucket")
    fields = event.model_fields_set
    with pytest.raises(TypeError):
        fields |= {"other"}
    assert event.model_fields_set == reference.model_fields_set
    for copied in (
        event.model_copy(update={"bucket": "other"}),
        event.model_copy(deep=True),
        pickle.loads(pickle.dumps(event)),
    ):
        assert type(copied.model_fields_set) is set
        assert copied.model_fields_set == reference.model_fields_set
    copied = event.model_copy()
    copied.model_fields_set.add("bucket")  # a copy is the copier's own
    assert pickle.loads(pickle.dumps(event)) == reference
