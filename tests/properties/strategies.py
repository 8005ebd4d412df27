"""Hypothesis strategies for the inputs the consumer reads: MinIO and AWS event documents
(shaped like tests/test_events.py's, every field drawn), their mutations, and raw bytes.

A generated event document comes with what a correct decoder must make of it
(``Expected``), so the properties can check the decoded values, not only that the two
decoders agree.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from consumer.events import ILM_EXPIRY_AGENT, RETENTION_AGENT_PRODUCT
from tests.test_events import go_query_escape

# Text as people and servers write it: any Unicode character except surrogates (which
# UTF-8, and so a Kafka message from MinIO, cannot carry) and NUL (which no S3 server
# sends: not in a header, a key or a bucket name). Both come in as noise below.
unicode_text = st.characters(codec="utf-8", exclude_characters="\x00")
ascii_printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

EVENT_NAMES = (
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectCreated:PutTagging",
    "s3:ObjectCreated:DeleteTagging",
    "s3:ObjectCreated:PutRetention",
    "s3:ObjectCreated:PutLegalHold",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRemoved:DeleteAllVersions",
    "s3:ObjectRemoved:NoOP",
    "s3:ObjectAccessed:Get",
    "s3:ObjectTagging:Put",
    "s3:LifecycleExpiration:Delete",
    "s3:ObjectCreated:Reconciled",
    "s3:ObjectRemoved:Reconciled",
)

event_names = st.one_of(
    st.sampled_from(EVENT_NAMES),
    st.sampled_from(EVENT_NAMES).map(lambda name: name.removeprefix("s3:")),  # AWS's form
    st.text(unicode_text, min_size=1, max_size=30),
)
user_agents = st.one_of(
    st.none(),
    st.sampled_from(
        [
            ILM_EXPIRY_AGENT,
            f"{RETENTION_AGENT_PRODUCT}/drafts-30d",
            f"MinIO (linux; amd64) minio-py/7.2.18 {RETENTION_AGENT_PRODUCT}/p",
            "MinIO (linux; amd64) minio-py/7.2.18",
            "",
        ]
    ),
    st.text(unicode_text, max_size=40),
)
keys = st.one_of(
    st.text(unicode_text, min_size=1, max_size=40),
    st.builds(
        lambda user, rest: f"user_{user}/{rest}",
        st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=8),
        st.text(unicode_text, min_size=1, max_size=30),
    ),
)
metadata_names = st.text(unicode_text, min_size=1, max_size=20)
metadata_values = st.text(unicode_text, max_size=40)
timezones_ = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]
)
event_times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=timezones_
)


def minio_time(moment: datetime) -> str:
    """Go's format for eventTime (``2006-01-02T15:04:05.000Z``), or an ISO offset form."""
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03}Z"
    return moment.isoformat()


@st.composite
def sequencers(draw: st.DrawFn) -> tuple[str, int]:
    """A sequencer as a server may write it (hex of any case, zero-padded or not) and its
    value."""
    value = draw(st.integers(0, 2**128 - 1))
    text = f"{value:X}" if draw(st.booleans()) else f"{value:x}"
    return "0" * draw(st.integers(0, 4)) + text, value


@dataclass(frozen=True)
class Expected:
    """What the decoder must make of one generated record."""

    bucket: str
    key: str
    version_id: str
    metadata: dict[str, str]
    sequencer: int
    size: int | None


@st.composite
def records(draw: st.DrawFn, *, bucket: str | None = None) -> tuple[dict[str, Any], Expected]:
    """One S3 event record, shaped like MinIO's ToEvent (tests/test_events.py) with every
    value drawn, and what it must decode to."""
    key = draw(keys)
    bucket = bucket or draw(st.text(unicode_text, min_size=1, max_size=20))
    sequencer, sequence = draw(sequencers())
    raw_metadata = draw(st.dictionaries(metadata_names, metadata_values, max_size=4))
    user_metadata = {f"X-Amz-Meta-{name}": value for name, value in raw_metadata.items()}
    if draw(st.booleans()):
        user_metadata["content-type"] = "audio/ogg"
    obj: dict[str, Any] = {"key": go_query_escape(key), "sequencer": sequencer}
    size = draw(st.none() | st.integers(0, 2**62))
    if size is not None:
        obj["size"] = size
    if draw(st.booleans()):
        obj |= {"eTag": draw(st.text(ascii_printable, max_size=34)), "contentType": "audio/ogg"}
        obj["userMetadata"] = user_metadata
    version = draw(st.none() | st.sampled_from(["null", "3b8d6c5e-0c2f-4a8e"]))
    if version is not None:
        obj["versionId"] = version
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": draw(st.sampled_from(["", "us-east-1"])),
        "eventTime": minio_time(draw(event_times)),
        "eventName": draw(event_names),
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "::1"},
        "responseElements": {"x-amz-request-id": draw(st.text(ascii_printable, max_size=16))},
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": draw(user_agents)},
    }
    # Entries differing only in case: the decoder keeps the one whose name sorts last.
    names = sorted(name for name in obj.get("userMetadata", {}) if _is_user_metadata(name))
    metadata = {name.lower()[len("x-amz-meta-") :]: obj["userMetadata"][name] for name in names}
    expected = Expected(bucket, key, "" if version is None else version, metadata, sequence, size)
    return record, expected


def _is_user_metadata(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("x-amz-meta-") and len(lowered) > len("x-amz-meta-")


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], list[Expected]]:
    """A message: MinIO's envelope around one record, or AWS's bare list of records."""
    if draw(st.booleans()):
        record, expected = draw(records())
        key = f"{expected.bucket}/{expected.key}"
        return {"EventName": record["eventName"], "Key": key, "Records": [record]}, [expected]
    drawn = draw(st.lists(records(), min_size=1, max_size=3))
    return {"Records": [r for r, _ in drawn]}, [e for _, e in drawn]


def encode(document: Any) -> bytes:
    """JSON as Go's encoding/json writes it (non-ASCII as raw UTF-8); text holding half a
    surrogate pair (which UTF-8 cannot encode) as \\u escapes."""
    try:
        return json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(document).encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(unicode_text, max_size=12)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)  # half pairs
    | st.sampled_from(["\x00", "a\x00b"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (dict keys and list indexes)."""
    found: list[tuple[Any, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for name, child in items:
        path = (*prefix, name)
        found.append(path)
        found.extend(_paths(child, path))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one to three values removed or replaced by any JSON value."""
    document, _ = draw(documents())
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = document
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return document


@st.composite
def damaged_bytes(draw: st.DrawFn) -> bytes:
    """A valid message's bytes with some bytes flipped, cut or inserted."""
    document, _ = draw(documents())
    data = bytearray(encode(document))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


# Any message value a topic could hold: real events, broken ones, and noise.
message_values = st.one_of(
    documents().map(lambda drawn: encode(drawn[0])),
    mutated_documents().map(encode),
    damaged_bytes(),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.none(),
)
