"""Pure tests of consumer.events: payloads shaped like what MinIO and AWS really send."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote_plus

import pytest
from pydantic import ValidationError

from consumer.errors import InvalidInput
from consumer.events import (
    ILM_EXPIRY_AGENT,
    EventFacts,
    EventKind,
    MalformedEvent,
    ObjectEvent,
    decode_key,
    event_kind_of,
    normalise_sequencer,
    parse_message,
    user_id_for,
    user_metadata_from_record,
)
from consumer.events import model as events_module

BUCKET = "voxpersona-audio"
KEY = "user_1/a b+c%d/файл.ogg"
# What Go's url.QueryEscape makes of KEY (checked against quote_plus below).
KEY_ESCAPED = "user_1%2Fa+b%2Bc%25d%2F%D1%84%D0%B0%D0%B9%D0%BB.ogg"
SEQUENCER = "1860F1F0A5B2C3D4"
EVENT_TIME = "2025-08-27T10:15:30.123Z"

# MinIO's ToEvent leaves size/eTag/contentType/userMetadata out of exactly these.
_MINIO_BARE_REMOVALS = {
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRemoved:NoOP",
}


def go_query_escape(key: str) -> str:
    """Go's url.QueryEscape: everything but A-Z a-z 0-9 - _ . ~ escaped, space as '+'."""
    return quote_plus(key, safe="")


def minio_record(
    *,
    event_name: str = "s3:ObjectCreated:Put",
    key: str = KEY,
    bucket: str = BUCKET,
    user_agent: str = "MinIO (linux; amd64) minio-py/7.2.18",
    host: str = "172.18.0.1",
    request_id: str = "1860F1F0A5C0FFEE",
    version_id: str | None = None,
) -> dict[str, Any]:
    """A record as MinIO's eventArgs.ToEvent builds it (cmd/event-notification.go)."""
    obj: dict[str, Any] = {"key": go_query_escape(key), "sequencer": SEQUENCER}
    if event_name not in _MINIO_BARE_REMOVALS:
        obj |= {
            "size": 48213,
            "eTag": "5d41402abc4b2a76b9719d911017c592",
            "contentType": "audio/ogg",
            "userMetadata": {
                "content-type": "audio/ogg",
                "X-Amz-Meta-User-Id": "123",
                "X-Amz-Meta-Session-Type": "interview",
                "x-amz-meta-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
        }
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": EVENT_TIME,
        "eventName": event_name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {
            "principalId": "minioadmin",
            "region": "",
            "sourceIPAddress": "172.18.0.1",
        },
        "responseElements": {
            "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
            "x-amz-request-id": request_id,
            "x-minio-deployment-id": "3b8d6c5e-0c2f-4a8e-9d3e-5b1f0a7c9e21",
            "x-minio-origin-endpoint": "http://172.18.0.3:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": host, "port": "", "userAgent": user_agent},
    }


def minio_message(record: dict[str, Any]) -> dict[str, Any]:
    """MinIO's Kafka envelope: Key is bucket + "/" + the unescaped key."""
    bucket = record["s3"]["bucket"]["name"]
    key = decode_key(record["s3"]["object"]["key"])
    return {"EventName": record["eventName"], "Key": f"{bucket}/{key}", "Records": [record]}


def aws_record(
    *, event_name: str = "ObjectCreated:Put", key: str = "uploads/red flower.jpg"
) -> dict[str, Any]:
    """A record as AWS S3 documents it (event format 2.1): no envelope, no source."""
    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),  # AWS leaves "/" alone; unquote_plus copes
        "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
        "sequencer": "0055AED6DCD90281E5",
    }
    if event_name.startswith("ObjectCreated"):
        obj |= {"size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e"}
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-west-2",
        "eventTime": "1970-01-01T00:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "testConfigRule",
            "bucket": {
                "name": "amzn-s3-demo-bucket",
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": "arn:aws:s3:::amzn-s3-demo-bucket",
            },
            "object": obj,
        },
    }


def encode(payload: Any) -> bytes:
    # Go's encoding/json writes non-ASCII as raw UTF-8, not \u escapes.
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def parse_one(payload: Any) -> ObjectEvent:
    [event] = parse_message(encode(payload))
    return event


def malformed(value: bytes | None, **kwargs: Any) -> MalformedEvent:
    with pytest.raises(MalformedEvent) as info:
        parse_message(value, **kwargs)
    return info.value


class TestMinioPut:
    def test_every_field(self) -> None:
        event = parse_one(minio_message(minio_record()))

        assert event == ObjectEvent(
            bucket=BUCKET,
            key=KEY,
            version_id="",
            event_name="s3:ObjectCreated:Put",
            kind=EventKind.CREATED,
            event_time=datetime(2025, 8, 27, 10, 15, 30, 123000, tzinfo=UTC),
            sequencer="0000000000000000" + SEQUENCER,
            size=48213,
            etag="5d41402abc4b2a76b9719d911017c592",
            content_type="audio/ogg",
            user_metadata={
                "user-id": "123",
                "session-type": "interview",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
            user_id="123",
            principal_id="minioadmin",
            source_ip="172.18.0.1",
            user_agent="MinIO (linux; amd64) minio-py/7.2.18",
            request_id="1860F1F0A5C0FFEE",
            region=None,  # MinIO sends "" when no region is configured
        )

    def test_fixture_key_is_what_go_sends(self) -> None:
        assert go_query_escape(KEY) == KEY_ESCAPED
        assert minio_record()["s3"]["object"]["key"] == KEY_ESCAPED

    def test_identity(self) -> None:
        event = parse_one(minio_message(minio_record()))
        assert event.identity == (
            BUCKET,
            KEY,
            "",
            "s3:ObjectCreated:Put",
            "0000000000000000" + SEQUENCER,
        )

    def test_redelivery_is_equal_and_hashes_alike(self) -> None:
        payload = encode(minio_message(minio_record()))
        first, second = parse_message(payload)[0], parse_message(payload)[0]
        assert first == second
        assert len({first, second}) == 1

    def test_is_frozen(self) -> None:
        event = parse_one(minio_message(minio_record()))
        with pytest.raises(ValidationError):
            event.key = "other"  # type: ignore[misc]

    def test_unknown_fields_are_ignored(self) -> None:
        record = minio_record()
        record["Type"] = 7
        record["glacierEventData"] = {"restoreEventData": {}}
        record["s3"]["object"]["contentDisposition"] = "inline"
        record["source"]["port"] = 9000  # ignored, so its type does not matter
        message = minio_message(record) | {"Extra": [1, 2]}
        assert parse_one(message).key == KEY

    def test_quoted_etag_is_unquoted(self) -> None:
        record = minio_record()
        record["s3"]["object"]["eTag"] = '"5d41402abc4b2a76b9719d911017c592-3"'
        assert parse_one(minio_message(record)).etag == "5d41402abc4b2a76b9719d911017c592-3"

    def test_zero_byte_object_has_size_zero(self) -> None:
        # MinIO marshals size with omitempty: a 0-byte upload arrives without "size".
        record = minio_record()
        del record["s3"]["object"]["size"]
        assert parse_one(minio_message(record)).size == 0

    @pytest.mark.parametrize(
        ("sent", "expected"),
        [
            (None, ""),  # unversioned bucket: field omitted
            ("null", "null"),  # kept as sent
            ("", ""),
            ("9b1c7d2e-4f3a-4c5b-8e6d-7a8b9c0d1e2f", "9b1c7d2e-4f3a-4c5b-8e6d-7a8b9c0d1e2f"),
        ],
    )
    def test_version_id(self, sent: str | None, expected: str) -> None:
        assert parse_one(minio_message(minio_record(version_id=sent))).version_id == expected

    def test_json_null_version_id_is_empty(self) -> None:
        record = minio_record()
        record["s3"]["object"]["versionId"] = None
        assert parse_one(minio_message(record)).version_id == ""

    def test_null_maps_are_tolerated(self) -> None:
        # Go marshals a nil map[string]string as null.
        record = minio_record()
        record["requestParameters"] = None
        record["responseElements"] = None
        event = parse_one(minio_message(record))
        assert (event.principal_id, event.source_ip, event.request_id) == (
            "minioadmin",
            None,
            None,
        )

    def test_region_falls_back_to_request_parameters(self) -> None:
        record = minio_record()
        record["requestParameters"]["region"] = "eu-central-1"
        assert parse_one(minio_message(record)).region == "eu-central-1"
        record["awsRegion"] = "us-east-1"
        assert parse_one(minio_message(record)).region == "us-east-1"


class TestKeys:
    @pytest.mark.parametrize(
        "key",
        [
            "plain.ogg",
            "a b.ogg",
            "a+b.ogg",
            "100%.ogg",
            "%2B literally.ogg",
            "файл.ogg",
            "音声/録音 1.ogg",
            "emoji 🎙️.ogg",
            "user_1/2025/08/27/session 1/take+2.ogg",
            "a//b/",
            "~tilde_-.ok",
            "?&=#;,:@$!'()*[]",
            " leading and trailing ",
        ],
    )
    def test_round_trip_through_go_escaping(self, key: str) -> None:
        assert decode_key(go_query_escape(key)) == key
        event = parse_one(minio_message(minio_record(key=key)))
        assert event.key == key

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("a+b", "a b"),
            ("a%2Bb", "a+b"),
            ("a%25b", "a%b"),
            ("a%2Fb%2Fc", "a/b/c"),
            ("a/b/c", "a/b/c"),  # AWS leaves "/" unescaped
            ("%D1%84", "ф"),
            ("%d1%84", "ф"),  # lower-case hex is still a valid escape
            ("", ""),
        ],
    )
    def test_decode(self, raw: str, expected: str) -> None:
        assert decode_key(raw) == expected

    @pytest.mark.parametrize("raw", ["%", "a%2", "a%zz", "%%", "%D1", "%FF", "%C3%28"])
    def test_damaged_escapes_are_malformed(self, raw: str) -> None:
        with pytest.raises(MalformedEvent) as info:
            decode_key(raw)
        assert info.value.error_class == "wrong_schema"

    def test_damaged_key_in_a_record_names_the_record(self) -> None:
        record = minio_record()
        record["s3"]["object"]["key"] = "a%zz"
        error = malformed(encode({"Records": [record]}))
        assert error.error_class == "wrong_schema"
        assert error.reason.startswith("Records[0]: s3.object.key")

    def test_envelope_key_is_the_unescaped_key(self) -> None:
        message = minio_message(minio_record())
        assert message["Key"] == f"{BUCKET}/{KEY}"
        assert parse_one(message).key == KEY

    @pytest.mark.parametrize(
        "envelope_key",
        [
            f"{BUCKET}/{KEY_ESCAPED}",  # escaped instead of unescaped
            f"{BUCKET}/other.ogg",
            f"other-bucket/{KEY}",
            KEY,  # bucket missing
            f"{BUCKET}/{KEY}/",
        ],
    )
    def test_envelope_key_mismatch(self, envelope_key: str) -> None:
        message = minio_message(minio_record()) | {"Key": envelope_key}
        error = malformed(encode(message))
        assert error.error_class == "key_mismatch"

    def test_envelope_event_name_mismatch(self) -> None:
        message = minio_message(minio_record()) | {"EventName": "s3:ObjectRemoved:Delete"}
        assert malformed(encode(message)).error_class == "name_mismatch"

    def test_envelope_without_key_is_accepted(self) -> None:
        message = minio_message(minio_record())
        del message["Key"]
        assert parse_one(message).key == KEY

    def test_empty_key_is_malformed_for_an_object_event(self) -> None:
        record = minio_record(key="")
        assert malformed(encode(minio_message(record))).error_class == "wrong_schema"

    def test_empty_key_is_allowed_for_other_events(self) -> None:
        # s3:BucketCreated names the bucket only; MinIO's envelope Key is then "bucket/".
        event = parse_one(minio_message(minio_record(event_name="s3:BucketCreated", key="")))
        assert (event.kind, event.key) == (EventKind.OTHER, "")


class TestAws:
    def test_plain_records_shape(self) -> None:
        event = parse_one({"Records": [aws_record()]})
        assert event.bucket == "amzn-s3-demo-bucket"
        assert event.key == "uploads/red flower.jpg"
        assert event.event_name == "s3:ObjectCreated:Put"
        assert event.kind is EventKind.CREATED
        assert event.event_time == datetime(1970, 1, 1, tzinfo=UTC)
        assert event.sequencer == "55AED6DCD90281E5".rjust(32, "0")
        assert event.version_id == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
        assert (event.size, event.content_type) == (1024, None)
        assert event.user_metadata == {}
        assert event.user_agent is None
        assert (event.principal_id, event.source_ip, event.region) == (
            "AWS:AIDAJDPLRKLG7UEXAMPLE",
            "127.0.0.1",
            "us-west-2",
        )
        assert event.request_id == "C3D13FE58DE4C810"

    def test_several_records_in_order(self) -> None:
        records = [
            aws_record(key="a.jpg"),
            aws_record(event_name="ObjectRemoved:Delete", key="b.jpg"),
            aws_record(event_name="LifecycleExpiration:Delete", key="c.jpg"),
        ]
        events = parse_message(encode({"Records": records}))
        assert [(e.key, e.kind) for e in events] == [
            ("a.jpg", EventKind.CREATED),
            ("b.jpg", EventKind.REMOVED),
            ("c.jpg", EventKind.EXPIRED),
        ]

    def test_one_bad_record_rejects_the_message(self) -> None:
        bad = aws_record()
        del bad["s3"]["bucket"]["name"]
        error = malformed(encode({"Records": [aws_record(), bad]}))
        assert error.error_class == "wrong_schema"
        assert error.reason == "Records[1].s3.bucket.name: Field required"

    def test_aws_removal_has_no_size(self) -> None:
        event = parse_one({"Records": [aws_record(event_name="ObjectRemoved:Delete")]})
        assert (event.size, event.etag, event.kind) == (None, None, EventKind.REMOVED)


class TestClassify:
    @pytest.mark.parametrize(
        ("event_name", "kind"),
        [
            ("s3:ObjectCreated:Put", EventKind.CREATED),
            ("s3:ObjectCreated:Post", EventKind.CREATED),
            ("s3:ObjectCreated:Copy", EventKind.CREATED),
            ("s3:ObjectCreated:CompleteMultipartUpload", EventKind.CREATED),
            ("s3:ObjectCreated:PutTagging", EventKind.METADATA_CHANGED),
            ("s3:ObjectCreated:DeleteTagging", EventKind.METADATA_CHANGED),
            ("s3:ObjectCreated:PutRetention", EventKind.METADATA_CHANGED),
            ("s3:ObjectCreated:PutLegalHold", EventKind.METADATA_CHANGED),
            ("s3:ObjectTagging:Put", EventKind.METADATA_CHANGED),
            ("s3:ObjectTagging:Delete", EventKind.METADATA_CHANGED),
            ("s3:ObjectRemoved:Delete", EventKind.REMOVED),
            ("s3:ObjectRemoved:DeleteMarkerCreated", EventKind.REMOVED),
            ("s3:ObjectRemoved:DeleteAllVersions", EventKind.REMOVED),
            ("s3:LifecycleExpiration:Delete", EventKind.EXPIRED),
            ("s3:LifecycleExpiration:DeleteMarkerCreated", EventKind.EXPIRED),
            ("s3:ObjectRemoved:NoOP", EventKind.NOOP),
            ("s3:ObjectAccessed:Get", EventKind.OTHER),
            ("s3:ObjectAccessed:Head", EventKind.OTHER),
            ("s3:ObjectCreated:SomethingNew", EventKind.OTHER),
            ("s3:ObjectRestore:Completed", EventKind.OTHER),
            ("s3:Scanner:ManyVersions", EventKind.OTHER),
            ("s3:BucketCreated", EventKind.OTHER),
            ("s3:ObjectCreated:put", EventKind.OTHER),  # names are case-sensitive
            ("", EventKind.OTHER),
        ],
    )
    def test_names(self, event_name: str, kind: EventKind) -> None:
        assert event_kind_of(event_name, None) is kind
        assert event_kind_of(event_name, "MinIO (linux; amd64) minio-go/v7.0.80") is kind

    @pytest.mark.parametrize(
        ("aws_name", "kind"),
        [
            ("ObjectCreated:Put", EventKind.CREATED),
            ("ObjectCreated:CompleteMultipartUpload", EventKind.CREATED),
            ("ObjectRemoved:Delete", EventKind.REMOVED),
            ("ObjectRemoved:DeleteMarkerCreated", EventKind.REMOVED),
            ("ObjectTagging:Put", EventKind.METADATA_CHANGED),
            ("LifecycleExpiration:Delete", EventKind.EXPIRED),
            ("ObjectRestore:Post", EventKind.OTHER),
        ],
    )
    def test_aws_names_without_prefix(self, aws_name: str, kind: EventKind) -> None:
        assert event_kind_of(aws_name, None) is kind

    @pytest.mark.parametrize(
        "event_name",
        [
            "s3:ObjectRemoved:Delete",
            "s3:ObjectRemoved:DeleteMarkerCreated",
            "s3:ObjectRemoved:DeleteAllVersions",
        ],
    )
    @pytest.mark.parametrize(
        "agent", [ILM_EXPIRY_AGENT, "Internal: [ILM-EXPIRY]", " internal: [ilm-expiry] "]
    )
    def test_ilm_removal_is_expiry(self, event_name: str, agent: str) -> None:
        assert event_kind_of(event_name, agent) is EventKind.EXPIRED

    @pytest.mark.parametrize(
        ("event_name", "kind"),
        [
            ("s3:ObjectRemoved:NoOP", EventKind.NOOP),
            ("s3:ObjectCreated:Put", EventKind.CREATED),
            ("s3:ObjectCreated:PutTagging", EventKind.METADATA_CHANGED),
            ("s3:ObjectAccessed:Get", EventKind.OTHER),
        ],
    )
    def test_ilm_agent_only_matters_for_removals(self, event_name: str, kind: EventKind) -> None:
        assert event_kind_of(event_name, ILM_EXPIRY_AGENT) is kind

    @pytest.mark.parametrize("agent", ["Internal: [ILM-Transition]", "ILM-Expiry", "", None])
    def test_other_agents_are_plain_removals(self, agent: str | None) -> None:
        assert event_kind_of("s3:ObjectRemoved:Delete", agent) is EventKind.REMOVED

    def test_kind_values(self) -> None:
        assert [kind.value for kind in EventKind] == [
            "created",
            "metadata_changed",
            "removed",
            "expired",
            "noop",
            "other",
            "reconciled",
        ]
        assert EventKind("expired") == "expired"

    @pytest.mark.parametrize(
        ("event_name", "kind"),
        [
            ("s3:ObjectCreated:CompleteMultipartUpload", EventKind.CREATED),
            ("s3:ObjectCreated:PutTagging", EventKind.METADATA_CHANGED),
            ("s3:ObjectRemoved:DeleteMarkerCreated", EventKind.REMOVED),
            ("s3:ObjectRemoved:NoOP", EventKind.NOOP),
            ("s3:ObjectAccessed:Get", EventKind.OTHER),
        ],
    )
    def test_parsed_events_are_classified(self, event_name: str, kind: EventKind) -> None:
        assert parse_one(minio_message(minio_record(event_name=event_name))).kind is kind


class TestRemovals:
    @pytest.mark.parametrize(
        "event_name",
        [
            "s3:ObjectRemoved:Delete",
            "s3:ObjectRemoved:DeleteMarkerCreated",
            "s3:ObjectRemoved:NoOP",
        ],
    )
    def test_removal_carries_no_content_fields(self, event_name: str) -> None:
        event = parse_one(minio_message(minio_record(event_name=event_name)))
        assert event.size is None
        assert event.etag is None
        assert event.content_type is None
        assert event.user_metadata == {}
        assert event.user_id == "1"  # still known from the key prefix

    def test_ilm_expiry_from_current_minio(self) -> None:
        # Current MinIO: userAgent carries the tag, host is the node, no request id.
        record = minio_record(
            event_name="s3:ObjectRemoved:Delete",
            user_agent=ILM_EXPIRY_AGENT,
            host="minio-1",
            request_id="",
        )
        event = parse_one(minio_message(record))
        assert event.kind is EventKind.EXPIRED
        assert event.user_agent == ILM_EXPIRY_AGENT
        assert event.request_id is None
        assert event.identity[4] == "0000000000000000" + SEQUENCER

    def test_ilm_expiry_from_older_minio(self) -> None:
        # Older MinIO put "Internal: [ILM-EXPIRY]" in source.host, userAgent empty.
        record = minio_record(
            event_name="s3:ObjectRemoved:DeleteMarkerCreated",
            user_agent="",
            host="Internal: [ILM-EXPIRY]",
            request_id="",
        )
        event = parse_one(minio_message(record))
        assert event.kind is EventKind.EXPIRED
        assert event.user_agent == "Internal: [ILM-EXPIRY]"

    def test_user_delete_is_removed(self) -> None:
        event = parse_one(minio_message(minio_record(event_name="s3:ObjectRemoved:Delete")))
        assert event.kind is EventKind.REMOVED
        assert event.user_agent == "MinIO (linux; amd64) minio-py/7.2.18"

    def test_missing_source_is_not_expiry(self) -> None:
        record = minio_record(event_name="s3:ObjectRemoved:Delete")
        del record["source"]
        event = parse_one(minio_message(record))
        assert (event.kind, event.user_agent) == (EventKind.REMOVED, None)

    def test_unrelated_host_is_not_a_user_agent(self) -> None:
        record = minio_record(event_name="s3:ObjectRemoved:Delete", user_agent="")
        assert parse_one(minio_message(record)).user_agent is None


class TestEventTime:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("2025-08-27T10:15:30.123Z", datetime(2025, 8, 27, 10, 15, 30, 123000, tzinfo=UTC)),
            ("2025-08-27T10:15:30Z", datetime(2025, 8, 27, 10, 15, 30, tzinfo=UTC)),
            ("2025-08-27T10:15:30+00:00", datetime(2025, 8, 27, 10, 15, 30, tzinfo=UTC)),
            ("2025-08-27T12:15:30.5+02:00", datetime(2025, 8, 27, 10, 15, 30, 500000, tzinfo=UTC)),
            ("2025-08-27T05:15:30-05:00", datetime(2025, 8, 27, 10, 15, 30, tzinfo=UTC)),
            ("2025-08-28T01:00:00+14:00", datetime(2025, 8, 27, 11, 0, tzinfo=UTC)),
            # Go's RFC3339Nano and Ceph's microseconds
            (
                "2025-08-27T10:15:30.123456789Z",
                datetime(2025, 8, 27, 10, 15, 30, 123456, tzinfo=UTC),
            ),
            ("2025-08-27T10:15:30.123456Z", datetime(2025, 8, 27, 10, 15, 30, 123456, tzinfo=UTC)),
        ],
    )
    def test_variants_become_utc(self, raw: str, expected: datetime) -> None:
        record = minio_record()
        record["eventTime"] = raw
        event_time = parse_one(minio_message(record)).event_time
        assert event_time == expected
        assert event_time.tzinfo is UTC

    @pytest.mark.parametrize(
        "raw", ["2025-08-27T10:15:30", "2025-08-27", "yesterday", "", "2025-13-01T00:00:00Z"]
    )
    def test_unusable_times_are_malformed(self, raw: str) -> None:
        record = minio_record()
        record["eventTime"] = raw
        error = malformed(encode(minio_message(record)))
        assert error.error_class == "wrong_schema"
        assert "eventTime" in error.reason


class TestMalformed:
    @pytest.mark.parametrize(
        ("value", "error_class"),
        [
            (None, "empty"),
            (b"", "empty"),
            (b'{"Records": []}', "empty"),
            (b'{"EventName": "s3:ObjectCreated:Put", "Key": "b/k", "Records": []}', "empty"),
            (b"not json", "not_json"),
            (b"   ", "not_json"),
            (b'{"Records": [', "not_json"),
            (b"{'Records': []}", "not_json"),
            (b'{"Records": [{"s3": {"object": {"size": NaN}}}]}', "not_json"),
            (b'{"size": Infinity}', "not_json"),
            (b"\xef\xbb\xbf{}", "not_json"),  # a UTF-8 byte-order mark
            (b"\x00\x01\x02\xff\xfe\xfd", "not_utf8"),
            (b"\x89PNG\r\n\x1a\n\x00\x00", "not_utf8"),
            ('{"Key": "é"}'.encode("latin-1"), "not_utf8"),
            (b"[]", "wrong_schema"),
            (b'[{"Records": []}]', "wrong_schema"),
            (b'"Records"', "wrong_schema"),
            (b"42", "wrong_schema"),
            (b"true", "wrong_schema"),
            (b"null", "wrong_schema"),
            (b"{}", "wrong_schema"),
            (b'{"Records": null}', "wrong_schema"),
            (b'{"Records": {}}', "wrong_schema"),
            (b'{"Records": [1]}', "wrong_schema"),
            (b'{"Records": [[]]}', "wrong_schema"),
            # AWS's s3:TestEvent, sent when a notification is configured, has no Records.
            (b'{"Service": "Amazon S3", "Event": "s3:TestEvent"}', "wrong_schema"),
        ],
    )
    def test_message_level(self, value: bytes | None, error_class: str) -> None:
        assert malformed(value).error_class == error_class

    def test_deep_nesting_is_not_json(self) -> None:
        assert malformed(b"[" * 200_000 + b"]" * 200_000).error_class == "not_json"

    def test_oversized(self) -> None:
        payload = encode(minio_message(minio_record()))
        error = malformed(payload, max_bytes=len(payload) - 1)
        assert error.error_class == "oversized"
        assert parse_message(payload, max_bytes=len(payload))[0].key == KEY

    def test_default_limit_is_one_mebibyte(self) -> None:
        message = minio_message(minio_record())
        message["Padding"] = "x" * 1_048_576
        assert malformed(encode(message)).error_class == "oversized"

    @pytest.mark.parametrize(
        ("path", "where"),
        [
            (("s3", "bucket", "name"), "Records[0].s3.bucket.name"),
            (("s3", "bucket"), "Records[0].s3.bucket"),
            (("s3", "object", "key"), "Records[0].s3.object.key"),
            (("s3",), "Records[0].s3"),
            (("eventName",), "Records[0].eventName"),
            (("eventTime",), "Records[0].eventTime"),
        ],
    )
    def test_missing_required_field(self, path: tuple[str, ...], where: str) -> None:
        record = minio_record()
        *parents, last = path
        target = record
        for part in parents:
            target = target[part]
        del target[last]
        error = malformed(encode({"Records": [record]}))
        assert (error.error_class, error.reason) == ("wrong_schema", f"{where}: Field required")

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("s3", "object", "size"), "48213"),
            (("s3", "object", "size"), 48213.0),
            (("s3", "object", "size"), True),
            (("s3", "object", "size"), -1),
            (("s3", "object", "key"), 42),
            (("s3", "object", "key"), None),
            (("s3", "object", "eTag"), 5),
            (("s3", "object", "sequencer"), 0x1860F1F0),
            (("s3", "object", "sequencer"), "not-hex"),
            (("s3", "object", "userMetadata"), {"X-Amz-Meta-User-Id": 123}),
            (("s3", "object", "userMetadata"), ["X-Amz-Meta-User-Id"]),
            (("s3", "object"), "key"),
            (("s3", "bucket", "name"), ""),
            (("s3", "bucket", "name"), ["voxpersona-audio"]),
            (("s3", "bucket"), "voxpersona-audio"),
            (("eventName",), ""),
            (("eventName",), 1),
            (("eventTime",), 1756289730),
            (("source", "userAgent"), 1),
            (("responseElements", "x-amz-request-id"), 7),
            (("userIdentity",), "minioadmin"),
        ],
    )
    def test_wrong_type(self, path: tuple[str, ...], value: Any) -> None:
        record = minio_record()
        *parents, last = path
        target = record
        for part in parents:
            target = target[part]
        target[last] = value
        message = {"Records": [record]}  # no envelope: the record itself must be rejected
        error = malformed(encode(message))
        assert error.error_class == "wrong_schema"
        assert error.reason.startswith("Records[0]")

    @pytest.mark.parametrize(
        ("field", "value"), [("Key", 5), ("EventName", ["s3:ObjectCreated:Put"])]
    )
    def test_wrong_envelope_type(self, field: str, value: Any) -> None:
        message = minio_message(minio_record()) | {field: value}
        assert malformed(encode(message)).error_class == "wrong_schema"

    def test_reason_is_one_short_line(self) -> None:
        message = minio_message(minio_record()) | {"Key": "x" * 10_000}
        error = malformed(encode(message))
        assert "\n" not in error.reason
        assert len(error.reason) < 600

    def test_error_contract(self) -> None:
        error = malformed(b"[]")
        assert isinstance(error, InvalidInput)
        assert error.retriable is False
        assert str(error) == "wrong_schema: expected a JSON object, got an array"
        copied = pickle.loads(pickle.dumps(error))
        assert (copied.error_class, copied.reason) == (error.error_class, error.reason)


class TestSequencer:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (SEQUENCER, "0000000000000000" + SEQUENCER),
            (SEQUENCER.lower(), "0000000000000000" + SEQUENCER),
            ("0055AED6DCD90281E5", "55AED6DCD90281E5".rjust(32, "0")),
            ("0", "0" * 32),
            ("000", "0" * 32),
            ("F" * 32, "F" * 32),
            ("00" + "F" * 32, "F" * 32),  # leading zeros do not count against the width
            (None, ""),
            ("", ""),
        ],
    )
    def test_normalise(self, raw: str | None, expected: str) -> None:
        assert normalise_sequencer(raw) == expected
        assert normalise_sequencer(normalise_sequencer(raw)) == expected  # idempotent

    @pytest.mark.parametrize("raw", ["0x1A", "1A ", " 1A", "G1", "-1", "1_0", "１２", "1" * 33])
    def test_invalid(self, raw: str) -> None:
        with pytest.raises(MalformedEvent) as info:
            normalise_sequencer(raw)
        assert info.value.error_class == "wrong_schema"

    @pytest.mark.parametrize(
        ("smaller", "larger"),
        [
            ("F", "10"),
            ("FF", "100"),
            ("9", "A"),
            ("a", "B"),  # case does not matter
            ("55AED6DCD90281E5", "0055AED6DCD90281E6"),  # different lengths, AWS style
            ("1860F1F0A5B2C3D4", "1860F1F0A5B2C3D5"),
            ("FFFFFFFFFFFFFFFF", "10000000000000000"),  # past 64 bits
        ],
    )
    def test_string_order_is_numeric_order(self, smaller: str, larger: str) -> None:
        assert int(smaller, 16) < int(larger, 16)
        assert normalise_sequencer(smaller) < normalise_sequencer(larger)

    def test_sorting_matches_numbers(self) -> None:
        raws = ["1860F1F0A5B2C3D4", "F", "0A", "100", "1", "55AED6DCD90281E5", "fff"]
        by_string = sorted(raws, key=normalise_sequencer)
        assert by_string == sorted(raws, key=lambda raw: int(raw, 16))

    def test_is_newer_than(self) -> None:
        event = parse_one(minio_message(minio_record()))
        assert event.is_newer_than("1860F1F0A5B2C3D3")
        assert event.is_newer_than("FF")  # shorter, so numerically smaller
        assert event.is_newer_than("")  # a record without sequencer loses
        assert not event.is_newer_than(SEQUENCER)  # a redelivery is not newer
        assert not event.is_newer_than(SEQUENCER.lower())
        assert not event.is_newer_than("0000" + SEQUENCER)
        assert not event.is_newer_than("1860F1F0A5B2C3D5")
        assert not event.is_newer_than("10000000000000000")  # longer, so larger

    def test_is_newer_than_rejects_garbage(self) -> None:
        event = parse_one(minio_message(minio_record()))
        with pytest.raises(MalformedEvent):
            event.is_newer_than("zz")

    def test_missing_sequencer(self) -> None:
        record = aws_record(event_name="ObjectTagging:Put")
        del record["s3"]["object"]["sequencer"]
        event = parse_one({"Records": [record]})
        assert event.sequencer == ""
        assert event.identity[4] == ""
        assert not event.is_newer_than("")
        assert not event.is_newer_than("0")


class TestUserMetadata:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (None, {}),
            ({}, {}),
            ({"content-type": "audio/ogg"}, {}),
            ({"X-Amz-Meta-User-Id": "1"}, {"user-id": "1"}),
            ({"x-amz-meta-user-id": "1"}, {"user-id": "1"}),
            ({"X-AMZ-META-SESSION-TYPE": "interview"}, {"session-type": "interview"}),
            ({"x-amz-meta-traceparent": "00-ab-cd-01"}, {"traceparent": "00-ab-cd-01"}),
            ({"X-Amz-Meta-": "no name"}, {}),
            ({"X-Amz-Meta-Note": ""}, {"note": ""}),
            ({"X-Amz-Meta-Name": "Ёлка файл"}, {"name": "Ёлка файл"}),
            (
                {
                    "content-type": "audio/ogg",
                    "X-Amz-Tagging-Count": "2",
                    "X-Minio-Internal-foo": "x",
                    "amz-meta-user-id": "not a meta header",
                    "X-Amz-Meta-User-Id": "123",
                },
                {"user-id": "123"},
            ),
            # case-duplicates: the original name sorting last wins, whatever the JSON order
            ({"x-amz-meta-a": "lower", "X-Amz-Meta-A": "title"}, {"a": "lower"}),
            ({"X-Amz-Meta-A": "title", "x-amz-meta-a": "lower"}, {"a": "lower"}),
        ],
    )
    def test_from_record(self, raw: dict[str, str] | None, expected: dict[str, str]) -> None:
        assert user_metadata_from_record(raw) == expected

    def test_input_is_not_modified(self) -> None:
        raw = {"X-Amz-Meta-User-Id": "1", "content-type": "audio/ogg"}
        before = copy.deepcopy(raw)
        user_metadata_from_record(raw)
        assert raw == before

    def test_same_names_keep_their_own_values(self) -> None:
        # The names are planned once; the values must still come from each message.
        first = {"X-Amz-Meta-User-Id": "1", "content-type": "audio/ogg"}
        second = {"X-Amz-Meta-User-Id": "2", "content-type": "audio/ogg"}
        assert user_metadata_from_record(first) == {"user-id": "1"}
        assert user_metadata_from_record(second) == {"user-id": "2"}
        assert user_metadata_from_record(first) == {"user-id": "1"}

    def test_entries_are_in_order_of_the_original_names(self) -> None:
        # The index stores the dict as JSON text: its order must not follow the JSON order.
        raw = {"x-amz-meta-b": "1", "content-type": "x", "X-Amz-Meta-C": "2", "X-Amz-Meta-A": "3"}
        for _ in range(2):
            assert list(user_metadata_from_record(raw).items()) == [
                ("a", "3"),
                ("c", "2"),
                ("b", "1"),
            ]

    def test_many_and_huge_name_sets_stay_correct_and_bounded(self) -> None:
        for index in range(3 * events_module._METADATA_PLANS_MAX):
            raw = {f"X-Amz-Meta-N{index}": str(index), "content-type": "audio/ogg"}
            assert user_metadata_from_record(raw) == {f"n{index}": str(index)}
            assert len(events_module._METADATA_PLANS) <= events_module._METADATA_PLANS_MAX
        huge = {"X-Amz-Meta-" + "n" * events_module._METADATA_PLAN_MAX_CHARS: "v"}
        assert user_metadata_from_record(huge) == {
            "n" * events_module._METADATA_PLAN_MAX_CHARS: "v"
        }
        assert tuple(huge) not in events_module._METADATA_PLANS
        many = {
            f"X-Amz-Meta-N{i}": str(i) for i in range(events_module._METADATA_PLAN_MAX_NAMES + 1)
        }
        assert user_metadata_from_record(many) == {f"n{i}": str(i) for i in range(len(many))}
        assert tuple(many) not in events_module._METADATA_PLANS
        fitting = {
            f"X-Amz-Meta-N{i}": str(i) for i in range(events_module._METADATA_PLAN_MAX_NAMES)
        }
        assert user_metadata_from_record(fitting) == {f"n{i}": str(i) for i in range(len(fitting))}
        assert tuple(fitting) in events_module._METADATA_PLANS


class TestUserId:
    @pytest.mark.parametrize(
        ("key", "metadata", "expected"),
        [
            ("user_123/interview.ogg", {}, "123"),
            ("user_123/2025/08/interview.ogg", {}, "123"),
            ("user_abc-42/x.ogg", {}, "abc-42"),
            ("user_1/a b+c%d/файл.ogg", {}, "1"),
            ("interview.ogg", {"user-id": "7"}, "7"),
            ("interview.ogg", {"user_id": "7"}, "7"),
            ("interview.ogg", {"userid": "7"}, "7"),
            ("interview.ogg", {"User-Id": "7"}, "7"),
            ("user_123/x.ogg", {"user-id": "7"}, "7"),  # metadata wins over the prefix
            ("user_123/x.ogg", {"user-id": "  "}, "123"),  # blank metadata is ignored
            ("user_123/x.ogg", {"user-id": " 7 "}, "7"),
            ("interview.ogg", {}, None),
            ("user_123", {}, None),  # an object named like a prefix is not one
            ("user_/x.ogg", {}, None),
            ("users_1/x.ogg", {}, None),
            ("uploads/user_1/x.ogg", {}, None),  # only the first segment counts
            ("", {}, None),
            ("interview.ogg", {"session-type": "interview"}, None),
        ],
    )
    def test_user_id_for(self, key: str, metadata: dict[str, str], expected: str | None) -> None:
        assert user_id_for(key, metadata) == expected

    def test_parsed_event_takes_metadata(self) -> None:
        record = minio_record(key="uploads/x.ogg")
        assert parse_one(minio_message(record)).user_id == "123"

    def test_parsed_event_falls_back_to_prefix(self) -> None:
        record = minio_record(key="user_42/x.ogg")
        del record["s3"]["object"]["userMetadata"]["X-Amz-Meta-User-Id"]
        assert parse_one(minio_message(record)).user_id == "42"


class TestObjectEventModel:
    """Other modules build ObjectEvent directly in their tests; the model must hold up."""

    def test_minimal_construction_and_defaults(self) -> None:
        event = ObjectEvent(
            bucket="b",
            key="k",
            event_name="s3:ObjectCreated:Put",
            kind=EventKind.CREATED,
            event_time=datetime(2025, 1, 1, tzinfo=UTC),
        )
        assert (event.version_id, event.sequencer, event.size) == ("", "", None)
        assert event.user_metadata == {}
        assert event.user_id is None

    def test_its_facts_are_its_fields_in_order(self) -> None:
        event = ObjectEvent(
            bucket="b",
            key="user_7/k.ogg",
            version_id="v1",
            event_name="s3:ObjectCreated:Put",
            kind=EventKind.CREATED,
            event_time=datetime(2025, 1, 1, tzinfo=UTC),
            sequencer="abc",
            size=3,
            user_metadata={"x-amz-meta-a": "1"},
            user_id="7",
        )
        facts = event.facts()
        assert EventFacts._fields == tuple(ObjectEvent.model_fields)
        assert facts._asdict() == event.model_dump()
        assert (facts.identity, hash(facts)) == (event.identity, hash(event))
        assert facts.is_newer_than("ab")
        assert not facts.is_newer_than("abc")

    def test_normalises_like_the_parser(self) -> None:
        event = ObjectEvent(
            bucket="b",
            key="k",
            event_name="ObjectRemoved:Delete",
            kind=EventKind.REMOVED,
            event_time=datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=3))),
            sequencer="abc",
        )
        assert event.event_name == "s3:ObjectRemoved:Delete"
        assert event.event_time == datetime(2025, 1, 1, 9, tzinfo=UTC)
        assert event.event_time.tzinfo is UTC
        assert event.sequencer == "ABC".rjust(32, "0")

    @pytest.mark.parametrize(
        "overrides",
        [
            {"event_time": datetime(2025, 1, 1)},  # naive
            {"sequencer": "xyz"},
            {"size": -1},
            {"bucket": ""},
            {"event_name": ""},
            {"unknown_field": 1},
        ],
    )
    def test_rejects(self, overrides: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "bucket": "b",
            "key": "k",
            "event_name": "s3:ObjectCreated:Put",
            "kind": EventKind.CREATED,
            "event_time": datetime(2025, 1, 1, tzinfo=UTC),
        }
        with pytest.raises(ValidationError):
            ObjectEvent(**(fields | overrides))
