"""Bucket-notification events: one Kafka message value in, checked and classified events
out. One home for the event concept: the model and its field rules (model.py), the checked
decoding path (checked.py), the fast one (fast.py) and ``parse_message`` over both
(parsing.py). Pure: no I/O, no clock, no settings."""

from consumer.events.checked import parse_message_checked
from consumer.events.model import (
    DEFAULT_MAX_BYTES,
    ILM_EXPIRY_AGENT,
    RECONCILE_FOUND,
    RECONCILE_GONE,
    RETENTION_AGENT_PRODUCT,
    SEQUENCER_WIDTH,
    AnyEvent,
    ErrorClass,
    EventFacts,
    EventKind,
    MalformedEvent,
    ObjectEvent,
    decode_key,
    event_kind_of,
    event_time_of,
    normalise_sequencer,
    removes_object,
    retention_policy_of,
    user_agent_of,
    user_id_for,
    user_metadata_from_record,
    writes_content,
)
from consumer.events.parsing import parse_message

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ILM_EXPIRY_AGENT",
    "RECONCILE_FOUND",
    "RECONCILE_GONE",
    "RETENTION_AGENT_PRODUCT",
    "SEQUENCER_WIDTH",
    "AnyEvent",
    "ErrorClass",
    "EventFacts",
    "EventKind",
    "MalformedEvent",
    "ObjectEvent",
    "decode_key",
    "event_kind_of",
    "event_time_of",
    "normalise_sequencer",
    "parse_message",
    "parse_message_checked",
    "removes_object",
    "retention_policy_of",
    "user_agent_of",
    "user_id_for",
    "user_metadata_from_record",
    "writes_content",
]
