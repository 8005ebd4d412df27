"""What went wrong with a MinIO call, from one table: ``classify_failure`` turns a
minio-py, urllib3 or socket exception into a ``MinioFailure`` (its kind, its code, one
line for a person).

The kinds, and what a caller usually does with them:

* ``gone``: the object, version or bucket asked for is not there (a HEAD of a delete
  marker too). ``bucket_missing`` tells a missing bucket apart: reconcile must not
  tombstone the objects of a bucket it cannot see.
* ``refused``: MinIO understood and said no (permissions, wrong keys, an expired token,
  a clock too far off to sign); a person has to change something.
* ``transient``: worth another try. MinIO busy or failing (5xx, SlowDown), the network
  (a refused or reset connection, a timeout), an answer that is not S3's (a proxy's page).
  ``answered`` is False when no HTTP answer came at all: the server is unreachable.
* ``tls``: the handshake failed or the certificate is not trusted; the settings
  (MINIO_CERT_PATH, MINIO_USE_SSL) or the server must change.
* ``invalid``: any other answer (a bad request, a failed precondition), or a local file
  that cannot be read or written.

Pure: no I/O, so every branch is tested with real exception objects
(tests/test_minio_failures.py) and against the test stack's MinIO
(tests/integration/test_minio_failures.py).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import urllib3
from minio.error import InvalidResponseError, MinioAdminException, MinioException, S3Error
from minio.error import ServerError as MinioServerError

from consumer.errors import ConnectionFailed, ConsumerError, NotFound, TlsFailed
from consumer.settings import Settings
from consumer.tls import ssl_error_detail

# Everything a minio-py call raises when MinIO or the way to it fails (ssl.SSLError and
# socket errors are OSErrors; urllib3 wraps most of them in its HTTPError; the admin
# client's errors are not MinioExceptions).
MINIO_ERRORS: Final = (MinioException, MinioAdminException, urllib3.exceptions.HTTPError, OSError)


class FailureKind(StrEnum):
    GONE = "gone"
    REFUSED = "refused"
    TRANSIENT = "transient"
    TLS = "tls"
    INVALID = "invalid"


# S3 error codes, AWS's and MinIO's own, by kind. A code not here is judged by its HTTP
# status (see _by_status).
S3_CODES: Final[Mapping[str, FailureKind]] = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "NoSuchKey",
                "NoSuchVersion",
                "NoSuchObject",
                "NoSuchBucket",
                "ResourceNotFound",
                "NoSuchUpload",
                "NoSuchLifecycleConfiguration",
                "NoSuchBucketPolicy",
                "NoSuchTagSet",
                "XMinioAdminNoSuchUser",
                "XMinioAdminNoSuchPolicy",
            ),
            FailureKind.GONE,
        ),
        **dict.fromkeys(
            (
                "AccessDenied",
                "AllAccessDisabled",
                "AccountProblem",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
                "InvalidTokenId",
                "XMinioInvalidIAMCredentials",
                "RequestTimeTooSkewed",
            ),
            FailureKind.REFUSED,
        ),
        **dict.fromkeys(
            (
                "SlowDown",
                "SlowDownRead",
                "SlowDownWrite",
                "ServiceUnavailable",
                "InternalError",
                "RequestTimeout",
                "OperationTimedOut",
                "XMinioServerNotInitialized",
                "XMinioBackendDown",
            ),
            FailureKind.TRANSIENT,
        ),
    }
)
BUCKET_MISSING: Final = "NoSuchBucket"
# A local file that minio-py could not read or write (fput_object, fget_object): no
# server involved, and trying again cannot help.
_LOCAL_FILE_ERRORS: Final = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_CAUSE_DEPTH: Final = 32


@dataclass(frozen=True)
class MinioFailure:
    """One MinIO failure, classified.

    ``code``: the S3 error code ("NoSuchKey"); without an S3 error document, "HTTP <status>";
    without an answer, the exception's class ("NewConnectionError"). ``reason``: MinIO's
    own message of an S3 error, else empty. ``message``: one line for a person, naming the
    endpoint when the settings were given.
    """

    kind: FailureKind
    code: str
    message: str
    answered: bool
    reason: str = ""

    @property
    def retriable(self) -> bool:
        return self.kind is FailureKind.TRANSIENT

    @property
    def bucket_missing(self) -> bool:
        return self.code == BUCKET_MISSING


def classify_failure(exc: BaseException, settings: Settings | None = None) -> MinioFailure:
    """The failure behind ``exc`` (any exception of a minio-py call; see the module
    docstring for the kinds). ``settings`` name the endpoint and CA bundle in messages."""
    at = f" at {settings.minio_endpoint}" if settings is not None else ""
    if isinstance(exc, S3Error):
        return _s3_failure(exc, at)
    if isinstance(exc, MinioAdminException):
        return _admin_failure(exc, at)
    if isinstance(exc, MinioServerError):
        kind = _by_status(exc.status_code)
        return MinioFailure(
            kind,
            f"HTTP {exc.status_code}",
            f"MinIO{at} answered HTTP {exc.status_code} without an S3 error document",
            answered=True,
        )
    if isinstance(exc, InvalidResponseError):
        status, content_type = getattr(exc, "_code", None), getattr(exc, "_content_type", None)
        # Not S3's XML: a proxy's or a load balancer's page, or a server not yet itself.
        return MinioFailure(
            FailureKind.TRANSIENT,
            f"HTTP {status}",
            f"MinIO{at} answered HTTP {status} with {content_type or 'no body'}, not an S3 reply",
            answered=True,
        )
    tls = minio_tls_problem(exc, settings)
    if tls is not None:
        return MinioFailure(FailureKind.TLS, type(_tls_cause(exc)).__name__, tls, answered=False)
    if isinstance(exc, _LOCAL_FILE_ERRORS) and exc.filename is not None:
        return MinioFailure(
            FailureKind.INVALID,
            type(exc).__name__,
            f"local file {exc.filename}: {exc.strerror}",
            answered=False,
        )
    if isinstance(exc, urllib3.exceptions.LocationParseError):
        return MinioFailure(
            FailureKind.INVALID, type(exc).__name__, f"MinIO{at}: {exc}", answered=False
        )
    return MinioFailure(
        FailureKind.TRANSIENT,
        type(exc).__name__,
        f"MinIO{at} unreachable: {_network_detail(exc)}",
        answered=False,
    )


def is_gone(exc: BaseException) -> bool:
    """``exc`` says the thing asked for is not there (for ``minio_operation(expected=)``:
    a HEAD that finds nothing is an answer, not an error)."""
    return isinstance(exc, MINIO_ERRORS) and classify_failure(exc).kind is FailureKind.GONE


def as_error(
    failure: MinioFailure, what: str = "", error: type[ConsumerError] = ConsumerError
) -> ConsumerError:
    """The package's error for ``failure``: NotFound (gone), TlsFailed, ConnectionFailed
    (no answer), else ``error`` with ``retriable`` from the kind. ``what`` prefixes it."""
    text = f"{what}: {failure.message}" if what else failure.message
    if failure.kind is FailureKind.GONE:
        return NotFound(text)
    if failure.kind is FailureKind.TLS:
        return TlsFailed(text)
    if failure.kind is FailureKind.TRANSIENT and not failure.answered:
        return ConnectionFailed(text)
    return error(text, retriable=failure.retriable)


def minio_tls_problem(exc: BaseException, settings: Settings | None = None) -> str | None:
    """One line saying what went wrong with TLS when ``exc`` (a urllib3 or minio error,
    at any depth of its causes) comes from a TLS failure; None otherwise.

    With ``settings`` the line names the CA bundle in use and the endpoint."""
    cause = _tls_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = ssl_error_detail(cause)
        where = "check MINIO_CERT_PATH"
        if settings is not None:
            where = f"MINIO_CERT_PATH={settings.minio_cert_path or 'unset: the system CAs'}"
        return f"MinIO TLS certificate not trusted: {detail} ({where})"
    if cause is not None:
        server = f"does {settings.minio_endpoint}" if settings is not None else "does the server"
        return (
            f"MinIO TLS handshake failed: {ssl_error_detail(cause)} "
            f"(MINIO_USE_SSL=true: {server} serve TLS on that port?)"
        )
    return None


def describe_minio_failure(exc: BaseException, settings: Settings) -> str:
    """One line for a MinIO failure: ``classify_failure(exc, settings).message``."""
    return classify_failure(exc, settings).message


# --- internals --------------------------------------------------------------------------


def _s3_failure(exc: S3Error, at: str) -> MinioFailure:
    code = exc.code or ""
    status: int | None = getattr(exc.response, "status", None)
    headers = getattr(exc.response, "headers", None) or {}
    kind = S3_CODES.get(code) or _by_status(status)
    if str(headers.get("x-amz-delete-marker", "")).lower() == "true":
        kind = FailureKind.GONE  # HEAD/GET of a delete marker: 404 or 405, no document
    reason = (exc.message or "").strip()
    said = f"{code}: {reason}" if reason else code
    return MinioFailure(kind, code, f"MinIO{at} said {said}", answered=True, reason=reason)


def _admin_failure(exc: MinioAdminException, at: str) -> MinioFailure:
    """The admin API answers JSON (``{"Code": ..., "Message": ...}``), not S3's XML."""
    body = str(getattr(exc, "_body", "") or "")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    fields = document if isinstance(document, dict) else {}
    code = str(fields.get("Code", "")) or f"HTTP {getattr(exc, '_code', '')}"
    reason = str(fields.get("Message", "") or body).strip()
    status = _int_or_none(getattr(exc, "_code", None))
    kind = S3_CODES.get(code) or _by_status(status)
    return MinioFailure(
        kind, code, f"MinIO{at} said {code}: {reason}", answered=True, reason=reason
    )


def _by_status(status: int | None) -> FailureKind:
    """The kind of an answer whose code the table does not know."""
    if status == 404:
        return FailureKind.GONE
    if status in (401, 403):
        return FailureKind.REFUSED
    if status in (408, 429) or (status is not None and status >= 500 and status != 501):
        return FailureKind.TRANSIENT
    return FailureKind.INVALID


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what lies behind it, nearest first: urllib3 wraps socket and ssl errors
    in its own (and, with retries, in MaxRetryError.reason), so follow causes, contexts,
    ``reason`` and arguments."""
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < _CAUSE_DEPTH:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        pending.extend(current.args)


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    return next((e for e in _causes(exc) if isinstance(e, ssl.SSLError)), None)


def _network_detail(exc: BaseException) -> str:
    """What the network said: the socket error's text ("Connection refused"), "timed out",
    or the exception's own words without urllib3's object reprs."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror)
    timeouts = (TimeoutError, urllib3.exceptions.TimeoutError)
    # urllib3's NewConnectionError is a ConnectTimeoutError by inheritance only.
    if not isinstance(exc, urllib3.exceptions.NewConnectionError) and any(
        isinstance(c, timeouts) for c in _causes(exc)
    ):
        return f"timed out ({type(exc).__name__})"
    text = str(exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc)
    # "<urllib3.connection.HTTPConnection object at 0x…>: Failed to establish …"
    if text.startswith("<") and ">: " in text:
        text = text.split(">: ", 1)[1]
    return text or type(exc).__name__
