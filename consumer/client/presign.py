"""Presigned uploads and downloads for the bot: what they allow is fixed when they are signed.

A POST policy pins the bucket, the exact key (inside the user's ``user_<id>/`` prefix),
the content type, the size range (``MINIO_MAX_FILE_SIZE``) and the metadata the indexer
relies on (user-id, session-type, original-name, traceparent): MinIO refuses a form that
changes any of them. The PUT variant signs the same headers into the URL
(``X-Amz-SignedHeaders``); the uploader must send exactly the headers returned with it.
Signing is pure (no request leaves the process); the functions take the clock as input.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from consumer.errors import InvalidInput
from consumer.names import (
    ORIGINAL_NAME,
    RESERVED_METADATA,
    SESSION_TYPE,
    TRACEPARENT,
    USER_ID,
    check_metadata,
    encode_metadata_value,
)

MAX_EXPIRY: Final = timedelta(days=7)  # SigV4's limit for presigned requests
DEFAULT_EXPIRY: Final = timedelta(hours=1)
_ALGORITHM: Final = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class PresignedPost:
    """An HTML-form upload: POST ``url`` as multipart/form-data with ``fields`` first and
    the file last (field name ``file``)."""

    url: str
    fields: dict[str, str] = field(repr=False)  # holds the signature
    bucket: str
    key: str
    max_size: int
    expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "POST",
            "url": self.url,
            "fields": self.fields,
            "bucket": self.bucket,
            "key": self.key,
            "max_size": self.max_size,
            "expires_at": self.expires_at.isoformat(),
        }


@dataclass(frozen=True)
class PresignedPut:
    """A single PUT of the object: ``url`` with exactly ``headers``."""

    url: str = field(repr=False)  # holds the signature
    headers: dict[str, str]
    bucket: str
    key: str
    expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "PUT",
            "url": self.url,
            "headers": self.headers,
            "bucket": self.bucket,
            "key": self.key,
            "expires_at": self.expires_at.isoformat(),
        }


def check_expiry(expires: timedelta) -> timedelta:
    if not timedelta(seconds=1) <= expires <= MAX_EXPIRY:
        raise InvalidInput("a presigned URL must expire between 1 second and 7 days")
    return expires


def upload_metadata(
    user_id: str,
    *,
    original_name: str | None = None,
    session_type: str | None = None,
    traceparent: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The metadata of an upload (names without ``x-amz-meta-``), checked. The project's
    own names win over ``extra`` — a caller cannot pass another user's id that way."""
    clash = sorted(RESERVED_METADATA & {name.lower() for name in extra or {}})
    if clash:
        raise InvalidInput(f"metadata {', '.join(clash)} is set by the uploader itself")
    metadata = dict(extra or {})
    metadata[USER_ID] = user_id
    if original_name:
        metadata[ORIGINAL_NAME] = encode_metadata_value(original_name)
    if session_type:
        metadata[SESSION_TYPE] = encode_metadata_value(session_type)
    if traceparent:
        metadata[TRACEPARENT] = traceparent
    return check_metadata(metadata)


def post_conditions(key: str, content_type: str, metadata: Mapping[str, str]) -> dict[str, str]:
    """The form fields a POST policy pins with ``eq`` (and the form must carry)."""
    fields = {"key": key, "Content-Type": content_type}
    fields.update({f"x-amz-meta-{name}": value for name, value in metadata.items()})
    return fields


def put_headers(content_type: str, metadata: Mapping[str, str]) -> dict[str, str]:
    """The headers a presigned PUT signs (and the uploader must send)."""
    headers = {"Content-Type": content_type}
    headers.update({f"x-amz-meta-{name}": value for name, value in metadata.items()})
    return headers


def host_header(endpoint: str, secure: bool) -> str:
    """The Host an HTTP client sends for ``endpoint`` (default ports are left out)."""
    default = ":443" if secure else ":80"
    return endpoint[: -len(default)] if endpoint.endswith(default) else endpoint


def object_path(bucket: str, key: str) -> str:
    """The path-style request path, URI-encoded as SigV4 canonicalises it."""
    return f"/{bucket}/{quote(key, safe='/~')}"


def presign_v4(
    *,
    method: str,
    scheme: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime,
    expires: timedelta,
    query: Mapping[str, str] | None = None,
) -> str:
    """A SigV4 query-signed URL whose signature also covers ``headers`` (minio-py signs
    only Host; boto3 does this but is not a runtime dependency). Pure."""
    now = now.astimezone(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now:%Y%m%d}/{region}/s3/aws4_request"
    signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed["host"] = host
    signed_names = ";".join(sorted(signed))
    params = dict(query or {})
    params.update(
        {
            "X-Amz-Algorithm": _ALGORITHM,
            "X-Amz-Credential": f"{access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(int(check_expiry(expires).total_seconds())),
            "X-Amz-SignedHeaders": signed_names,
        }
    )
    canonical_query = "&".join(
        f"{_uri_encode(name)}={_uri_encode(value)}" for name, value in sorted(params.items())
    )
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in sorted(signed))
    canonical_request = "\n".join(
        (method, path, canonical_query, canonical_headers, signed_names, "UNSIGNED-PAYLOAD")
    )
    string_to_sign = "\n".join(
        (_ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    signing_key = f"AWS4{secret_key}".encode()
    for part in (f"{now:%Y%m%d}", region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{scheme}://{host}{path}?{canonical_query}&X-Amz-Signature={signature}"


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")
