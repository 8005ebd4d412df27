"""Pure tests of consumer.minio: the classifier over real minio-py, urllib3, ssl and socket
exception objects (as those libraries build them), the translation into this package's
errors, and the call/retry helper. tests/integration/test_minio_failures.py makes the same
failures happen against the stack's MinIO."""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Callable

import pytest
import urllib3
from minio.error import InvalidResponseError, MinioAdminException, S3Error, ServerError
from urllib3.response import HTTPResponse

from consumer.errors import (
    ConnectionFailed,
    ConsumerError,
    DownloadFailed,
    NotFound,
    TlsFailed,
    UploadFailed,
)
from consumer.minio import (
    FailureKind,
    as_error,
    classify_failure,
    is_gone,
    minio_call,
    translated,
)
from consumer.minio.failures import S3_CODES
from consumer.settings import Settings

ENDPOINT = "127.0.0.1:9"


def settings(**values: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        MINIO_ENDPOINT=ENDPOINT,
        MINIO_RETRY_BACKOFF=0.001,
        MINIO_MAX_RETRIES=2,
        **values,
    )


def s3_error(code: str | None, status: int, headers: dict[str, str] | None = None) -> S3Error:
    """An S3Error as minio-py builds it: over the HTTP response it came with."""
    response = HTTPResponse(body=b"", status=status, headers=headers or {})
    return S3Error(response, code, f"{code} message", "/b/k", "req-1", "host-1", "b", "k")


def refused_connection() -> urllib3.exceptions.NewConnectionError:
    """What urllib3 raises (retries off) when nothing listens: the socket error is its cause."""
    error = urllib3.exceptions.NewConnectionError(
        None,  # type: ignore[arg-type]
        "Failed to establish a new connection: [Errno 111] Connection refused",
    )
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


def not_trusted() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] verify failed")
    error.verify_message = "unable to get local issuer certificate"  # type: ignore[attr-defined]
    return error


# --- the table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("NoSuchKey", FailureKind.GONE),
        ("NoSuchVersion", FailureKind.GONE),
        ("NoSuchObject", FailureKind.GONE),
        ("ResourceNotFound", FailureKind.GONE),
        ("NoSuchBucket", FailureKind.GONE),
        ("AccessDenied", FailureKind.REFUSED),
        ("InvalidAccessKeyId", FailureKind.REFUSED),
        ("SignatureDoesNotMatch", FailureKind.REFUSED),
        ("SlowDown", FailureKind.TRANSIENT),
        ("SlowDownRead", FailureKind.TRANSIENT),
        ("XMinioServerNotInitialized", FailureKind.TRANSIENT),
        ("InternalError", FailureKind.TRANSIENT),
    ],
)
def test_s3_codes_have_one_kind(code: str, kind: FailureKind) -> None:
    failure = classify_failure(s3_error(code, 400))  # the table wins over the status
    assert (failure.kind, failure.code, failure.answered) == (kind, code, True)
    assert failure.retriable is (kind is FailureKind.TRANSIENT)
    assert S3_CODES[code] is kind


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, FailureKind.GONE),
        (403, FailureKind.REFUSED),
        (503, FailureKind.TRANSIENT),
        (500, FailureKind.TRANSIENT),
        (429, FailureKind.TRANSIENT),
        (501, FailureKind.INVALID),
        (400, FailureKind.INVALID),
        (412, FailureKind.INVALID),
    ],
)
def test_an_unknown_code_is_judged_by_its_status(status: int, kind: FailureKind) -> None:
    assert classify_failure(s3_error("XSomethingNew", status)).kind is kind


def test_only_no_such_bucket_says_the_bucket_is_missing() -> None:
    assert classify_failure(s3_error("NoSuchBucket", 404)).bucket_missing
    assert not classify_failure(s3_error("NoSuchKey", 404)).bucket_missing


def test_a_head_of_a_delete_marker_is_gone() -> None:
    # minio-py names a bodyless 405 MethodNotAllowed; the header says why.
    marker = s3_error("MethodNotAllowed", 405, {"x-amz-delete-marker": "true"})
    assert classify_failure(marker).kind is FailureKind.GONE
    assert is_gone(marker)
    assert classify_failure(s3_error("MethodNotAllowed", 405)).kind is FailureKind.INVALID


def test_an_s3_error_line_names_the_endpoint_code_and_message() -> None:
    failure = classify_failure(s3_error("AccessDenied", 403), settings())
    assert failure.message == f"MinIO at {ENDPOINT} said AccessDenied: AccessDenied message"
    assert failure.reason == "AccessDenied message"
    assert classify_failure(s3_error("AccessDenied", 403)).message.startswith("MinIO said ")


def test_answers_without_an_s3_document() -> None:
    busy = classify_failure(ServerError("server failed with HTTP status code 503", 503), settings())
    assert (busy.kind, busy.code, busy.answered) == (FailureKind.TRANSIENT, "HTTP 503", True)
    assert ENDPOINT in busy.message
    proxy = classify_failure(InvalidResponseError(502, "text/html", "<html>bad gateway</html>"))
    assert (proxy.kind, proxy.code) == (FailureKind.TRANSIENT, "HTTP 502")
    assert "text/html" in proxy.message
    assert "<html>" not in proxy.message


def test_admin_api_errors_read_their_json_body() -> None:
    body = '{"Code":"XMinioAdminNoSuchUser","Message":"The specified user does not exist."}'
    missing = classify_failure(MinioAdminException("404", body))
    assert (missing.kind, missing.code) == (FailureKind.GONE, "XMinioAdminNoSuchUser")
    assert missing.reason == "The specified user does not exist."
    denied = classify_failure(MinioAdminException("403", '{"Code":"AccessDenied","Message":"no"}'))
    assert denied.kind is FailureKind.REFUSED
    garbled = classify_failure(MinioAdminException("500", "not json"))
    assert (garbled.kind, garbled.code, garbled.reason) == (
        FailureKind.TRANSIENT,
        "HTTP 500",
        "not json",
    )


def test_no_answer_is_transient_and_says_what_the_network_said() -> None:
    refused = classify_failure(refused_connection(), settings())
    assert (refused.kind, refused.code, refused.answered) == (
        FailureKind.TRANSIENT,
        "NewConnectionError",
        False,
    )
    assert refused.message == f"MinIO at {ENDPOINT} unreachable: Connection refused"
    timeout = classify_failure(urllib3.exceptions.ReadTimeoutError(None, "/b/k", "Read timed out."))  # type: ignore[arg-type]
    assert timeout.kind is FailureKind.TRANSIENT
    assert timeout.message == "MinIO unreachable: timed out (ReadTimeoutError)"
    reset = urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")
    )
    assert classify_failure(reset).message == "MinIO unreachable: Connection reset by peer"
    assert classify_failure(ConnectionRefusedError(111, "Connection refused")).retriable


def test_tls_failures_at_any_depth() -> None:
    wrapped = urllib3.exceptions.SSLError(not_trusted())
    retried = urllib3.exceptions.MaxRetryError(None, "/b", reason=wrapped)  # type: ignore[arg-type]
    failure = classify_failure(retried, settings(MINIO_USE_SSL=True))
    assert (failure.kind, failure.code, failure.answered, failure.retriable) == (
        FailureKind.TLS,
        "SSLCertVerificationError",
        False,
        False,
    )
    assert failure.message == (
        "MinIO TLS certificate not trusted: unable to get local issuer certificate "
        "(MINIO_CERT_PATH=unset: the system CAs)"
    )
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    handshake = classify_failure(urllib3.exceptions.SSLError(plain), settings())
    assert handshake.kind is FailureKind.TLS
    assert f"does {ENDPOINT} serve TLS" in handshake.message


def test_a_local_file_problem_is_not_the_network() -> None:
    missing = FileNotFoundError(2, "No such file or directory", "/no/dir/x.part.minio")
    failure = classify_failure(missing)
    assert (failure.kind, failure.answered) == (FailureKind.INVALID, False)
    assert failure.message == "local file /no/dir/x.part.minio: No such file or directory"
    assert isinstance(as_error(failure, "download", DownloadFailed), DownloadFailed)


# --- translation ------------------------------------------------------------------------


def test_as_error_maps_kinds_to_the_error_hierarchy() -> None:
    gone = as_error(classify_failure(s3_error("NoSuchKey", 404)), "stat b/k", DownloadFailed)
    assert isinstance(gone, NotFound)
    assert str(gone) == "stat b/k: MinIO said NoSuchKey: NoSuchKey message"
    denied = as_error(classify_failure(s3_error("AccessDenied", 403)), "put", UploadFailed)
    assert isinstance(denied, UploadFailed)
    assert not denied.retriable
    busy = as_error(classify_failure(s3_error("SlowDown", 503)), "put", UploadFailed)
    assert isinstance(busy, UploadFailed)
    assert busy.retriable
    down = as_error(classify_failure(refused_connection()), "put", UploadFailed)
    assert type(down) is ConnectionFailed
    assert down.retriable
    tls = as_error(
        classify_failure(urllib3.exceptions.SSLError(not_trusted())), "put", UploadFailed
    )
    assert isinstance(tls, TlsFailed)
    assert isinstance(tls, ConnectionFailed)
    assert not tls.retriable
    assert str(as_error(classify_failure(refused_connection()))).startswith("MinIO unreachable")


def test_translated_raises_the_translation_from_the_original() -> None:
    original = s3_error("NoSuchKey", 404)
    with pytest.raises(NotFound) as caught, translated(lambda f: as_error(f, "read")):
        raise original
    assert caught.value.__cause__ is original
    with pytest.raises(ValueError, match="not a MinIO failure"), translated(as_error):
        raise ValueError("not a MinIO failure")


# --- the call/retry helper -------------------------------------------------------------


def calls_failing_with(*errors: BaseException) -> tuple[Callable[[], str], list[str]]:
    """A blocking call that raises ``errors`` in turn, then returns "done"; and the names
    of the threads it ran in."""
    pending = list(errors)
    threads: list[str] = []

    def call() -> str:
        threads.append(threading.current_thread().name)
        if pending:
            raise pending.pop(0)
        return "done"

    return call, threads


async def test_minio_call_runs_in_a_thread_and_translates() -> None:
    call, threads = calls_failing_with(s3_error("AccessDenied", 403))
    with pytest.raises(
        UploadFailed, match=re.escape("put b/k: MinIO at 127.0.0.1:9 said AccessDenied")
    ):
        await minio_call(call, what="put b/k", settings=settings(), error=UploadFailed)
    assert len(threads) == 1
    assert threads[0] != threading.main_thread().name
    assert await minio_call(call, what="put b/k", settings=settings()) == "done"


async def test_minio_call_retries_transient_failures_only_when_asked() -> None:
    call, threads = calls_failing_with(refused_connection(), s3_error("SlowDown", 503))
    result = await minio_call(call, what="get", settings=settings(), retrying=True)
    assert (result, len(threads)) == ("done", 3)

    call, threads = calls_failing_with(refused_connection())
    with pytest.raises(ConnectionFailed):
        await minio_call(call, what="get", settings=settings())
    assert len(threads) == 1

    call, threads = calls_failing_with(s3_error("AccessDenied", 403), refused_connection())
    with pytest.raises(DownloadFailed):
        await minio_call(call, what="get", settings=settings(), error=DownloadFailed, retrying=True)
    assert len(threads) == 1  # a refusal is final


async def test_minio_call_gives_up_after_max_retries_with_a_retriable_error() -> None:
    call, threads = calls_failing_with(*(refused_connection() for _ in range(5)))
    with pytest.raises(DownloadFailed, match="gave up after 3 attempts") as caught:
        await minio_call(call, what="get", settings=settings(), error=DownloadFailed, retrying=True)
    assert caught.value.retriable
    assert str(caught.value) == (
        f"get: gave up after 3 attempts: MinIO at {ENDPOINT} unreachable: Connection refused"
    )
    assert len(threads) == 3  # MINIO_MAX_RETRIES=2: three attempts


async def test_minio_call_custom_translation_and_foreign_errors() -> None:
    call, _ = calls_failing_with(s3_error("NoSuchBucket", 404))
    with pytest.raises(ConsumerError, match=r"^bucket gone$"):
        await minio_call(
            call,
            what="list",
            settings=settings(),
            translate=lambda f: ConsumerError("bucket gone" if f.bucket_missing else "other"),
        )
    call, _ = calls_failing_with(KeyError("a bug, not MinIO"))
    with pytest.raises(KeyError):
        await minio_call(call, what="list", settings=settings(), retrying=True)
