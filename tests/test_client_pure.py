"""The client's pure parts: safe names, metadata, SigV4 presigning, ETags, the manifest."""

from __future__ import annotations

import hashlib
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio.error import S3Error

from consumer.cli.common import split_bucket_key
from consumer.cli.progress import ProgressBar, render_bar
from consumer.client.api import minio_failure
from consumer.client.files import content_type_for, digest_file, expected_etag
from consumer.client.importer import parse_manifest
from consumer.client.presign import host_header, object_path, presign_v4, upload_metadata
from consumer.durations import parse_duration
from consumer.errors import ConnectionFailed, InvalidInput, NotFound, UploadFailed
from consumer.events import user_id_for
from consumer.names import (
    MAX_KEY_BYTES,
    check_key,
    check_metadata,
    decode_metadata_value,
    encode_metadata_value,
    import_key,
    safe_file_name,
    upload_key,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("interview.ogg", "interview.ogg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\bob\\voice.m4a", "voice.m4a"),
        ("a..b...wav", "a.b.wav"),
        ("..hidden", "hidden"),
        ("tab\tand\nnewline.ogg", "tab_and_newline.ogg"),
        ("", "file"),
        ("..", "file"),
        (".ogg", "ogg"),
        ("голос 1.ogg", "голос 1.ogg"),
    ],
)
def test_safe_file_name(name: str, expected: str) -> None:
    assert safe_file_name(name) == expected


def test_long_names_are_cut_to_200_bytes_keeping_the_extension() -> None:
    name = safe_file_name("я" * 300 + ".flac")
    assert name.endswith(".flac")
    assert len(name.encode()) <= 200


def test_built_keys_are_safe_for_any_input() -> None:
    """Fuzz: whatever the file name, the key keeps the promises of issue 7."""
    rng = random.Random(7)
    alphabet = "ab./\\\x00\x1f\x7f .-_я🎙%+#?"
    for _ in range(2000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        key = upload_key("42", name, now=NOW, unique="0123abcd")
        assert key.startswith("user_42/2026-11-21/0123abcd-")
        assert ".." not in key
        assert not key.startswith("/")
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key)
        assert len(key.encode()) <= MAX_KEY_BYTES
        assert user_id_for(key, {}) == "42"


def test_import_keys_keep_the_relative_path_safely() -> None:
    assert (
        import_key("7", "ab12cd34", "2024/May/../x.wav") == "user_7/import-ab12cd34/2024/May/x.wav"
    )
    with pytest.raises(InvalidInput, match="no file name"):
        import_key("7", "ab12cd34", "../..")


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("/abs.ogg", "starts with '/'"),
        ("a/../b.ogg", "path segment"),
        ("a/./b.ogg", "path segment"),
        ("bell\x07.ogg", "control character"),
        ("k" * 1025, "longer than 1024 bytes"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(key: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        check_key(key)


@pytest.mark.parametrize("user", ["", "a/b", "..", "x" * 65, "user id", "-lead"])
def test_bad_user_ids_are_refused(user: str) -> None:
    with pytest.raises(InvalidInput, match="user id"):
        upload_key(user, "a.ogg", now=NOW, unique="abcd")


def test_metadata_is_checked_and_non_ascii_is_percent_encoded() -> None:
    meta = upload_metadata(
        "42", original_name="Интервью 100%.ogg", session_type="interview", extra={"Lang": "ru"}
    )
    assert meta["user-id"] == "42"
    assert meta["lang"] == "ru"
    assert meta["original-name"].isascii()
    assert decode_metadata_value(meta["original-name"]) == "Интервью 100%.ogg"
    assert encode_metadata_value("plain name.ogg") == "plain name.ogg"
    with pytest.raises(InvalidInput, match="set by the uploader"):
        upload_metadata("42", extra={"User-Id": "43"})
    with pytest.raises(InvalidInput, match="lowercase letters"):
        check_metadata({"bad name": "x"})
    with pytest.raises(InvalidInput, match="printable ASCII"):
        check_metadata({"lang": "русский"})
    with pytest.raises(InvalidInput, match="S3 allows 2048"):
        check_metadata({f"m{i}": "v" * 100 for i in range(20)})


def test_presign_v4_matches_the_aws_documented_example() -> None:
    """AWS's SigV4 query-auth example (GET examplebucket/test.txt, signed host only)."""
    url = presign_v4(
        method="GET",
        scheme="https",
        host="examplebucket.s3.amazonaws.com",
        path="/test.txt",
        headers={},
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        now=datetime(2013, 5, 24, tzinfo=UTC),
        expires=timedelta(days=1),
    )
    assert url.endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    assert "X-Amz-SignedHeaders=host&" in url


def test_presigned_put_signs_the_metadata_headers() -> None:
    url = presign_v4(
        method="PUT",
        scheme="http",
        host=host_header("127.0.0.1:80", secure=False),
        path=object_path("voxpersona-audio", "user_42/a b+c.ogg"),
        headers={"Content-Type": "audio/ogg", "x-amz-meta-user-id": "42"},
        access_key="AK",
        secret_key="SK",
        region="us-east-1",
        now=NOW,
        expires=timedelta(minutes=5),
    )
    assert url.startswith("http://127.0.0.1/voxpersona-audio/user_42/a%20b%2Bc.ogg?")
    assert "X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-meta-user-id" in url
    with pytest.raises(InvalidInput, match="7 days"):
        presign_v4(
            method="PUT", scheme="http", host="h", path="/b/k", headers={}, access_key="a",
            secret_key="s", region="us-east-1", now=NOW, expires=timedelta(days=8),
        )  # fmt: skip


def test_etag_prediction_for_single_and_multipart_uploads(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100  # 25,600 bytes
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    single = digest_file(path, part_size=1 << 20)
    assert single.etag == hashlib.md5(data).hexdigest()
    assert single.sha256 == hashlib.sha256(data).hexdigest()
    parts = [data[i : i + 10_000] for i in range(0, len(data), 10_000)]
    multi = digest_file(path, part_size=10_000)
    assert multi.etag == expected_etag([hashlib.md5(p).digest() for p in parts])
    assert multi.etag.endswith("-3")
    assert multi.size == len(data)
    exact = tmp_path / "exact.bin"
    exact.write_bytes(data[:20_000])
    assert digest_file(exact, part_size=10_000).etag.endswith("-2")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert digest_file(empty).etag == hashlib.md5(b"").hexdigest()


def test_content_types() -> None:
    assert content_type_for("a.OGG") == "audio/ogg"
    assert content_type_for("a.m4a") == "audio/mp4"
    assert content_type_for("notes.txt") == "text/plain"
    assert content_type_for("blob") == "application/octet-stream"


def test_manifest_parsing_tolerates_only_a_torn_last_line() -> None:
    header = json.dumps(
        {"type": "import", "import_id": "ab12cd34", "directory": "/d", "user_id": "7"}
        | {"bucket": "b", "started_at": "t"}
    )
    entry = json.dumps(
        {"type": "file", "path": "a.wav", "size": 1, "sha256": "s", "bucket": "b", "key": "k"}
        | {"etag": "e", "version_id": None, "imported_at": "t"}
    )
    parsed_header, files = parse_manifest(iter([header, entry, '{"type": "fi']), "m")
    assert parsed_header.import_id == "ab12cd34"
    assert list(files) == ["a.wav"]
    with pytest.raises(InvalidInput, match="line 2 is not a manifest record"):
        parse_manifest(iter([header, "garbage", entry]), "m")
    with pytest.raises(InvalidInput, match="no header line"):
        parse_manifest(iter([entry]), "m")


def test_durations_and_targets() -> None:
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("1W") == timedelta(weeks=1)
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration("soon")
    assert split_bucket_key("audio/user_1/a.ogg", None) == ("audio", "user_1/a.ogg")
    assert split_bucket_key("user_1/a.ogg", "audio") == ("audio", "user_1/a.ogg")
    with pytest.raises(InvalidInput, match="BUCKET/KEY"):
        split_bucket_key("justakey", None)


def test_minio_errors_map_to_the_error_hierarchy() -> None:
    def s3(code: str) -> S3Error:
        return S3Error(None, code, "msg", "res", "req", "host")  # type: ignore[arg-type]

    assert isinstance(minio_failure(s3("NoSuchKey"), "get"), NotFound)
    denied = minio_failure(s3("AccessDenied"), "put")
    assert isinstance(denied, UploadFailed)
    assert not denied.retriable
    assert minio_failure(s3("SlowDown"), "put").retriable
    refused = minio_failure(ConnectionRefusedError(111, "refused"), "put")
    assert isinstance(refused, ConnectionFailed)
    assert refused.retriable


def test_progress_bar_draws_quarters_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar("big.wav", 1000, stream=out)
    for done in range(0, 1001, 50):
        bar.update(done)
    bar.finish()
    lines = out.getvalue().splitlines()
    assert [line.split("]")[1].split()[0] for line in lines] == ["25%", "50%", "75%", "100%"]
    assert render_bar("x", 0, 0, elapsed_s=0).startswith("x [")
