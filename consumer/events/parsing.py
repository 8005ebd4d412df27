"""``parse_message``: one Kafka message value in, its events out, by the fast path when it
takes the message and by the checked path otherwise (which also names what is wrong)."""

from __future__ import annotations

from consumer.events import fast as _fast
from consumer.events.checked import parse_message_checked
from consumer.events.model import DEFAULT_MAX_BYTES, ObjectEvent


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
