"""Safe object names and metadata: what the project builds and what it accepts. Pure.

Keys the project builds never contain ``..``, control characters or a leading ``/`` and
never exceed S3's 1024 bytes: a key is ``user_<id>/…`` so the owning user can be read back
from the prefix (``consumer.events.user_id_for``) and the uploader's policy can scope to
it. Everything a person types (user ids, file names, keys, metadata) is checked here and
refused with an InvalidInput that names the problem — the CLI turns it into one line and
exit 2.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Final
from urllib.parse import quote, unquote

from consumer.errors import InvalidInput

MAX_KEY_BYTES: Final = 1024
# S3 limits all user metadata of an object to 2 KB (names and values, as sent).
MAX_METADATA_BYTES: Final = 2048
MAX_FILE_NAME_BYTES: Final = 200
USER_PREFIX: Final = "user_"

# S3's bucket naming rules: 3-63 lower-case letters, digits, dots and hyphens, starting
# and ending with a letter or digit, no "..", not an IPv4 address, not a reserved affix.
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4: Final = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_BUCKET_RESERVED_PREFIXES: Final = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES: Final = ("-s3alias", "--ol-s3", "--x-s3", ".mrap")
_USER_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_METADATA_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]*")
_DOT_RUNS: Final = re.compile(r"\.{2,}")
# Half a UTF-16 surrogate pair: how Python holds a file name's or an argument's bytes that
# are not UTF-8 (PEP 383). UTF-8 cannot encode it.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# Characters kept as they are in an encoded metadata value: printable ASCII except "%".
_METADATA_SAFE: Final = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

# The metadata the project itself sets on an upload (x-amz-meta-<name>).
USER_ID: Final = "user-id"
SESSION_TYPE: Final = "session-type"
ORIGINAL_NAME: Final = "original-name"
TRACEPARENT: Final = "traceparent"
SHA256: Final = "sha256"
RESERVED_METADATA: Final = frozenset({USER_ID, SESSION_TYPE, ORIGINAL_NAME, TRACEPARENT, SHA256})


def check_bucket(name: str) -> str:
    """A bucket name as S3 allows it; InvalidInput naming the rule it breaks otherwise."""
    if not _BUCKET.fullmatch(name):
        raise InvalidInput(
            f"bucket name {name!r} is not valid: use 3-63 lower-case letters, digits, '.'"
            " or '-', starting and ending with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidInput(f"bucket name {name!r} is not valid: no '..', '.-' or '-.'")
    if _IPV4.fullmatch(name):
        raise InvalidInput(f"bucket name {name!r} is not valid: it looks like an IP address")
    if name.startswith(_BUCKET_RESERVED_PREFIXES) or name.endswith(_BUCKET_RESERVED_SUFFIXES):
        raise InvalidInput(f"bucket name {name!r} is not valid: S3 reserves its prefix or suffix")
    return name


def check_user_id(user_id: str) -> str:
    """A user id usable in a key prefix: letters, digits, ``_`` and ``-``, at most 64."""
    if not _USER_ID.fullmatch(user_id):
        raise InvalidInput(
            f"user id {user_id!r} must be 1-64 letters, digits, '_' or '-' (e.g. a Telegram id)"
        )
    return user_id


def user_prefix(user_id: str) -> str:
    """``user_<id>/``: the prefix every key of that user starts with."""
    return f"{USER_PREFIX}{check_user_id(user_id)}/"


def check_key(key: str) -> str:
    """A key as given by a person (to delete, download, presign): refused when S3 or a file
    system could misread it."""
    if not key:
        raise InvalidInput("object key is empty")
    if _SURROGATE.search(key):
        # A command-line argument with bytes that are not UTF-8 (PEP 383 escapes them).
        raise InvalidInput(f"object key {key!r} is not valid UTF-8")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidInput(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidInput(f"object key {key!r} starts with '/'")
    if _CONTROL.search(key):
        raise InvalidInput(f"object key {key!r} contains a control character")
    if any(segment in ("..", ".") for segment in key.split("/")):
        raise InvalidInput(f"object key {key!r} has a '.' or '..' path segment")
    return key


def safe_file_name(name: str) -> str:
    """The last component of ``name`` made safe for a key: NFC, no directory part, no
    control characters, no ``..``, no leading dots or spaces, at most 200 bytes (keeping
    the extension). Never empty."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _SURROGATE.sub("_", _CONTROL.sub("_", name))
    name = _DOT_RUNS.sub(".", name).strip().lstrip(".").strip()
    stem, dot, extension = name.rpartition(".")
    if not stem or len((dot + extension).encode("utf-8")) >= MAX_FILE_NAME_BYTES // 2:
        # No extension, the name was only an extension, or one too long to be one: then
        # the whole name is cut to size.
        stem, dot, extension = name, "", ""
    budget = MAX_FILE_NAME_BYTES - len((dot + extension).encode("utf-8"))
    stem = _truncate_utf8(stem, max(budget, 1)).rstrip(". ")
    return (stem + dot + extension) if stem else "file" + dot + extension


def safe_relative_path(path: str) -> str:
    """A relative file path (``a/b/c.wav``) as key segments, each made safe."""
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    if not parts:
        raise InvalidInput(f"path {path!r} has no file name")
    return "/".join(safe_file_name(part) for part in parts)


def upload_key(user_id: str, file_name: str, *, now: datetime, unique: str) -> str:
    """The key of a new upload: ``user_<id>/<YYYY-MM-DD>/<unique>-<safe name>``.

    ``unique`` (a random hex string) keeps two uploads of the same name apart; the date
    keeps a user's prefix listable by day.
    """
    if not re.fullmatch(r"[0-9a-f]{4,32}", unique):
        raise InvalidInput(f"unique part {unique!r} must be 4-32 lowercase hex digits")
    key = f"{user_prefix(user_id)}{now:%Y-%m-%d}/{unique}-{safe_file_name(file_name)}"
    return check_key(key)


def import_key(user_id: str, import_id: str, relative_path: str) -> str:
    """The key of an imported file: ``user_<id>/import-<id>/<safe relative path>``;
    deterministic, so a resumed import finds what an interrupted one already wrote."""
    return check_key(
        f"{user_prefix(user_id)}import-{import_id}/{safe_relative_path(relative_path)}"
    )


def encode_metadata_value(value: str) -> str:
    """A metadata value as HTTP can carry it: printable ASCII as is, anything else (and
    ``%``) percent-encoded as UTF-8. Reversible with ``decode_metadata_value``, except for
    half a surrogate pair (a file name's bytes that are not UTF-8, PEP 383), which UTF-8
    cannot encode: it becomes "?"."""
    return quote(value, safe=_METADATA_SAFE, errors="replace")


def decode_metadata_value(value: str) -> str:
    return unquote(value)


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata for an upload: names lowercase ``[a-z0-9-]``, values printable ASCII
    (use ``encode_metadata_value`` first), 2 KB in all. Returns the names lowered."""
    checked: dict[str, str] = {}
    for name, value in metadata.items():
        lowered = name.lower()
        if lowered.startswith("x-amz-meta-"):
            lowered = lowered[len("x-amz-meta-") :]
        if not _METADATA_NAME.fullmatch(lowered):
            raise InvalidInput(
                f"metadata name {name!r} must be lowercase letters, digits and '-' (max 64)"
            )
        if not _PRINTABLE_ASCII.fullmatch(value):
            raise InvalidInput(
                f"metadata {lowered!r} must be printable ASCII (non-ASCII is percent-encoded)"
            )
        checked[lowered] = value
    size = sum(len(f"x-amz-meta-{n}") + len(v) for n, v in checked.items())
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {size} bytes; S3 allows {MAX_METADATA_BYTES}")
    return checked


def parse_metadata_options(items: list[str] | None) -> dict[str, str]:
    """``["session-type=interview", …]`` from ``--meta`` options → metadata (encoded)."""
    parsed: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"--meta must be KEY=VALUE, got {item!r}")
        parsed[name.strip().lower()] = encode_metadata_value(value)
    return check_metadata(parsed)


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")
