"""consumer.minio against the stack's MinIO: each kind of failure made to happen for real
(wrong keys, a missing object, bucket and version, a delete marker, a failed If-Match, a
closed port, TLS spoken to the plain-HTTP server) and classified as tests/
test_minio_failures.py expects of the exception objects."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Callable

import pytest
from minio import Minio
from minio.commonconfig import ENABLED
from minio.versioningconfig import VersioningConfig

from consumer.errors import ConnectionFailed, DownloadFailed, NotFound, TlsFailed
from consumer.minio import MINIO_ERRORS, FailureKind, MinioFailure, classify_failure, minio_call
from consumer.minio import minio_client as make_client
from consumer.settings import Settings
from tests.conftest import StackEndpoints, unique_name

pytestmark = pytest.mark.integration


def failure_of(call: Callable[[], object], settings: Settings) -> MinioFailure:
    """The classified failure of a call that must fail."""
    try:
        call()
    except MINIO_ERRORS as exc:
        return classify_failure(exc, settings)
    raise AssertionError("the call succeeded")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def bucket(make_bucket: Callable[..., str]) -> str:
    return make_bucket("fail", notify_events=False)


def test_wrong_keys_are_refused(stack: StackEndpoints, bucket: str) -> None:
    wrong_secret = stack.settings(MINIO_SECRET_KEY="not-the-secret-key")
    failure = failure_of(lambda: list(make_client(wrong_secret).list_objects(bucket)), wrong_secret)
    assert (failure.kind, failure.code, failure.answered) == (
        FailureKind.REFUSED,
        "SignatureDoesNotMatch",
        True,
    )
    assert failure.message.startswith(f"MinIO at {wrong_secret.minio_endpoint} said ")
    unknown = stack.settings(MINIO_ACCESS_KEY=unique_name("nobody"))
    failure = failure_of(lambda: list(make_client(unknown).list_objects(bucket)), unknown)
    assert (failure.kind, failure.code) == (FailureKind.REFUSED, "InvalidAccessKeyId")
    # A HEAD has no body: minio-py names the bare 403 AccessDenied, refused all the same.
    failure = failure_of(lambda: make_client(unknown).stat_object(bucket, "k"), unknown)
    assert (failure.kind, failure.code) == (FailureKind.REFUSED, "AccessDenied")


def test_missing_objects_versions_and_buckets_are_gone(
    stack: StackEndpoints, minio: Minio, bucket: str
) -> None:
    settings = stack.settings()
    for call in (
        lambda: minio.get_object(bucket, "no/such/key"),
        lambda: minio.stat_object(bucket, "no/such/key"),
    ):
        failure = failure_of(call, settings)
        assert (failure.kind, failure.code, failure.bucket_missing) == (
            FailureKind.GONE,
            "NoSuchKey",
            False,
        )
    missing = unique_name("nobucket")
    failure = failure_of(lambda: list(minio.list_objects(missing)), settings)
    assert (failure.kind, failure.bucket_missing) == (FailureKind.GONE, True)

    minio.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    written = minio.put_object(bucket, "k", io.BytesIO(b"x"), 1)
    minio.remove_object(bucket, "k")  # a delete marker now hides the key
    (marker,) = [v for v in minio.list_objects(bucket, include_version=True) if v.is_delete_marker]
    failure = failure_of(
        lambda: minio.stat_object(bucket, "k", version_id=marker.version_id), settings
    )
    # A HEAD of a delete marker: a bare 405, which the x-amz-delete-marker header explains.
    assert (failure.kind, failure.code) == (FailureKind.GONE, "MethodNotAllowed"), failure
    failure = failure_of(lambda: minio.stat_object(bucket, "k"), settings)
    assert failure.kind is FailureKind.GONE, failure
    # The version itself is still there.
    assert minio.stat_object(bucket, "k", version_id=written.version_id).size == 1


def test_a_failed_if_match_is_an_invalid_request(
    stack: StackEndpoints, minio: Minio, bucket: str
) -> None:
    minio.put_object(bucket, "k", io.BytesIO(b"x"), 1)
    failure = failure_of(
        lambda: minio.get_object(bucket, "k", request_headers={"If-Match": '"0000"'}),
        stack.settings(),
    )
    assert (failure.kind, failure.code) == (FailureKind.INVALID, "PreconditionFailed")


def test_a_closed_port_is_unreachable_and_transient(stack: StackEndpoints) -> None:
    settings = stack.settings(MINIO_ENDPOINT=f"127.0.0.1:{closed_port()}")
    failure = failure_of(lambda: make_client(settings).bucket_exists("any-bucket"), settings)
    assert (failure.kind, failure.answered, failure.retriable) == (
        FailureKind.TRANSIENT,
        False,
        True,
    )
    assert failure.message == f"MinIO at {settings.minio_endpoint} unreachable: Connection refused"


def test_tls_spoken_to_the_plain_http_server_is_a_tls_failure(
    stack: StackEndpoints, bucket: str
) -> None:
    settings = stack.settings(MINIO_USE_SSL=True)
    failure = failure_of(lambda: make_client(settings).bucket_exists(bucket), settings)
    assert (failure.kind, failure.answered, failure.retriable) == (FailureKind.TLS, False, False)
    assert failure.message.startswith("MinIO TLS handshake failed: "), failure.message
    assert f"does {settings.minio_endpoint} serve TLS" in failure.message


async def test_minio_call_raises_the_package_errors(stack: StackEndpoints, bucket: str) -> None:
    settings = stack.settings(MINIO_RETRY_BACKOFF=0.01, MINIO_MAX_RETRIES=1)
    client = make_client(settings)
    with pytest.raises(NotFound):
        await minio_call(
            lambda: client.stat_object(bucket, "nothing"), what="stat", settings=settings
        )
    down = stack.settings(MINIO_ENDPOINT=f"127.0.0.1:{closed_port()}", MINIO_RETRY_BACKOFF=0.01)
    with pytest.raises(ConnectionFailed, match="unreachable: Connection refused"):
        await minio_call(
            lambda: make_client(down).bucket_exists(bucket), what="head", settings=down
        )
    with pytest.raises(DownloadFailed, match="gave up after 2 attempts") as caught:
        await minio_call(
            lambda: make_client(down).bucket_exists(bucket),
            what="head",
            settings=settings.model_copy(update={"minio_endpoint": down.minio_endpoint}),
            error=DownloadFailed,
            retrying=True,
        )
    assert caught.value.retriable
    tls = stack.settings(MINIO_USE_SSL=True)
    with pytest.raises(TlsFailed):
        await asyncio.wait_for(
            minio_call(
                lambda: make_client(tls).bucket_exists(bucket),
                what="head",
                settings=tls,
                retrying=True,  # not retried: TLS is final
            ),
            timeout=5,
        )
