"""Local files as S3 will see them: size, SHA-256 and the ETag MinIO will compute.

Uploads use a fixed part size, so the ETag of what MinIO stored can be predicted from the
local bytes: the MD5 of the file for a single PUT, ``md5(md5(part1)…md5(partN))-N`` for a
multipart upload. Comparing it with the ETag MinIO returns verifies every byte arrived.
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consumer.errors import DigestCancelled

# Files above this go as multipart uploads of parts this size (boto3's default). Progress
# is reported per part, so a smaller part gives a smoother bar; S3's minimum is 5 MiB.
UPLOAD_PART_SIZE: Final = 8 * 1024 * 1024
_READ_SIZE: Final = 1024 * 1024

# mimetypes misses or misnames some audio formats the bot receives.
_AUDIO_TYPES: Final = {
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/opus",
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".webm": "audio/webm",
    ".aac": "audio/aac",
}


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    etag: str  # as MinIO will report it, without quotes


def digest_file(
    path: Path, part_size: int = UPLOAD_PART_SIZE, *, cancelled: threading.Event | None = None
) -> FileDigest:
    """Read ``path`` once: its size, SHA-256, and expected ETag for ``part_size`` parts.

    ``cancelled`` is checked at every read: hashing gigabytes takes seconds, and an
    interrupted upload must not wait for it (asyncio.run joins its worker threads)."""
    sha256 = hashlib.sha256()
    part_md5s: list[bytes] = []
    size = 0
    with path.open("rb") as handle:
        while True:
            part = hashlib.md5()  # noqa: S324 - S3's ETag algorithm, not a security use
            part_bytes = 0
            while part_bytes < part_size:
                if cancelled is not None and cancelled.is_set():
                    raise DigestCancelled(str(path))
                chunk = handle.read(min(_READ_SIZE, part_size - part_bytes))
                if not chunk:
                    break
                sha256.update(chunk)
                part.update(chunk)
                part_bytes += len(chunk)
            if part_bytes == 0 and part_md5s:
                break
            part_md5s.append(part.digest())
            size += part_bytes
            if part_bytes < part_size:
                break
    return FileDigest(size=size, sha256=sha256.hexdigest(), etag=expected_etag(part_md5s))


def expected_etag(part_md5s: list[bytes]) -> str:
    """The S3 ETag of an object uploaded in parts with these MD5s (one part: a plain PUT)."""
    if len(part_md5s) == 1:
        return part_md5s[0].hex()
    combined = hashlib.md5(b"".join(part_md5s)).hexdigest()  # noqa: S324 - S3's ETag
    return f"{combined}-{len(part_md5s)}"


def content_type_for(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in _AUDIO_TYPES:
        return _AUDIO_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"
