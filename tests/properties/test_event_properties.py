"""The event decoder on generated messages: realistic MinIO and AWS documents with every
field drawn, the same documents with values removed or replaced, damaged bytes and noise.

- the fast path (msgspec) and the checked path (pydantic) decide every message alike;
- a valid document decodes, on the fast path, to the key, bucket, metadata and sequencer
  it was built from;
- any value gives events or a dead letter with a class and a one-line reason, never
  another exception, and the dead letter's headers can be written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, get_args

from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import example, given

from consumer.events import (
    DEFAULT_MAX_BYTES,
    ErrorClass,
    MalformedEvent,
    ObjectEvent,
    parse_message,
    parse_message_checked,
)
from consumer.events.fast import decode_fast
from consumer.indexer import decode_batch
from consumer.kafka.dead_letters import dead_letter_headers
from tests.properties.strategies import Expected, documents, encode, message_values
from tests.test_events import minio_message, minio_record

ERROR_CLASSES = set(get_args(ErrorClass))


def outcome(value: bytes | None, parse: Any) -> tuple[str, Any]:
    try:
        events: list[ObjectEvent] = parse(value, max_bytes=DEFAULT_MAX_BYTES)
    except MalformedEvent as exc:
        return ("error", (exc.error_class, exc.reason))
    return ("events", [event.model_dump() for event in events])


def _with_escape_in(field: str, escape: str = "\\ud800") -> bytes:
    """A MinIO message with the JSON ``escape`` (by default half a surrogate pair) in the
    record's key (the envelope agreeing) or in a metadata value."""
    text = json.dumps(minio_message(minio_record(key="user_1/a.ogg")))
    if field == "key":
        text = text.replace('/user_1/a.ogg"', f'/user_1/a{escape}.ogg"')  # the envelope's Key
        text = text.replace('"user_1%2Fa.ogg"', f'"user_1%2Fa{escape}.ogg"')
    else:
        text = text.replace('"interview"', f'"inter{escape}view"')
    assert escape in text
    return text.encode()


@given(message_values)
# Found by these properties: a \u escape of half a surrogate pair decoded (json.loads) into
# a key no database can store (msgspec refused it, pydantic took it); and a NUL (\u0000),
# which PostgreSQL's text refuses: a permanent index error that stopped the indexer.
@example(_with_escape_in("key"))
@example(_with_escape_in("metadata", "\\udc00"))
@example(_with_escape_in("key", "\\u0000"))
@example(_with_escape_in("metadata", "\\u0000"))
@example(_with_escape_in("metadata", "\\\\u0000"))  # an escaped backslash, then "u0000"
def test_both_paths_decide_every_message_alike(value: bytes | None) -> None:
    assert outcome(value, parse_message) == outcome(value, parse_message_checked)


@given(message_values)
@example(_with_escape_in("key"))
@example(_with_escape_in("key", "\\u0000"))
@example(_with_escape_in("metadata", "\\u0000"))
def test_any_value_gives_events_or_a_dead_letter_with_a_reason(value: bytes | None) -> None:
    record = ConsumerRecord(
        topic="minio-events",
        partition=0,
        offset=7,
        timestamp=1_790_000_000_000,
        timestamp_type=0,
        key=b"bucket/key",
        value=value,
        checksum=None,
        serialized_key_size=10,
        serialized_value_size=len(value) if value is not None else -1,
        headers=[],
    )
    decoded = decode_batch(
        {TopicPartition("minio-events", 0): [record]}, max_message_bytes=DEFAULT_MAX_BYTES
    )
    assert len(decoded.events) + len(decoded.dead_letters) >= 1
    assert not (decoded.events and decoded.dead_letters)
    for letter in decoded.dead_letters:
        assert letter.error_class in ERROR_CLASSES
        assert letter.reason.strip(), "a dead letter without a reason"
        assert "\n" not in letter.reason, "the reason must be one line"
        headers = dead_letter_headers(letter, group_id="g", now=datetime(2026, 1, 1, tzinfo=UTC))
        assert dict(headers)["x-error-class"] == letter.error_class.encode()
    for event, _ in decoded.events:
        # What the index stores must be storable: text that encodes as UTF-8.
        stored = [event.bucket, event.key, event.version_id, event.event_name]
        stored += [part for item in event.user_metadata.items() for part in item]
        stored += [event.etag, event.content_type, event.user_id, event.user_agent]
        for text in stored:
            if text is not None:
                text.encode("utf-8")
                assert "\x00" not in text, "PostgreSQL's text cannot hold a NUL"


@given(documents())
def test_a_valid_document_decodes_on_the_fast_path_to_what_it_was_built_from(
    drawn: tuple[dict[str, Any], list[Expected]],
) -> None:
    document, expected = drawn
    value = encode(document)
    fast = decode_fast(value, DEFAULT_MAX_BYTES)
    assert fast is not None, "a valid message fell back to the checked path"
    assert fast == parse_message_checked(value)
    assert len(fast) == len(expected)
    for event, wanted in zip(fast, expected, strict=True):
        assert (event.bucket, event.key, event.version_id) == (
            wanted.bucket,
            wanted.key,
            wanted.version_id,
        )
        assert event.user_metadata == wanted.metadata
        assert int(event.sequencer, 16) == wanted.sequencer
        assert len(event.sequencer) == 32
        if wanted.size is not None:
            assert event.size == wanted.size
    # ASCII-only JSON (every non-ASCII character as a \u escape) means the same.
    escaped = json.dumps(document).encode()
    assert parse_message(escaped) == fast
