"""The job's object in MinIO as a seekable file: ranged GETs, a few cached blocks.

Probing a 2 GB recording reads its header (and, for some containers, its last pages), so
the reader fetches only the blocks asked for and keeps at most ``cached_blocks`` of them:
memory stays bounded whatever the object's size. Every GET carries ``If-Match`` with the
event's etag, so a reader never mixes two contents of an overwritten key.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from minio import Minio

from consumer.errors import ConsumerError, ProcessingFailed, ProcessingRetriable
from consumer.minio import FailureKind, MinioFailure, classify_failure, translated
from consumer.processing.base import Job
from consumer.telemetry import minio_operation

BLOCK_SIZE: Final = 256 * 1024
CACHED_BLOCKS: Final = 8
# The object's content is pinned by If-Match: a newer upload answers this.
_CHANGED: Final = "PreconditionFailed"


def describe_minio_error(exc: Exception, what: str) -> ConsumerError:
    """A minio/urllib3 failure as ProcessingFailed (gone, changed, refused, TLS
    certificate not trusted) or ProcessingRetriable (server or network trouble)."""
    return processing_error(classify_failure(exc), what)


def processing_error(failure: MinioFailure, what: str) -> ConsumerError:
    """Final for what another attempt cannot change; retriable for anything else."""
    if failure.kind is FailureKind.GONE:
        return ProcessingFailed(f"{what}: the object no longer exists ({failure.code})")
    if failure.code == _CHANGED:
        return ProcessingFailed(
            f"{what}: the object changed since its event (a newer upload has its own event)"
        )
    if failure.kind is FailureKind.REFUSED:
        return ProcessingFailed(f"{what}: MinIO refused access ({failure.code})")
    if failure.kind is FailureKind.TLS:
        # Settings are read once per process: trying again cannot fix a CA mismatch, and
        # the event in the DLQ can be replayed once MINIO_CERT_PATH is right.
        return ProcessingFailed(f"{what}: {failure.message}")
    return ProcessingRetriable(f"{what}: {failure.message}")


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over ``fetch(offset, length)`` with an LRU block cache."""

    def __init__(
        self,
        fetch: Callable[[int, int], bytes],
        size: int,
        *,
        name: str = "",
        block_size: int = BLOCK_SIZE,
        cached_blocks: int = CACHED_BLOCKS,
    ) -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._block_size = block_size
        self._cached_blocks = cached_blocks
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._position = 0
        self.name = name  # mutagen uses the file name as a format hint
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"seek before the start of {self.name!r}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._position >= self._size or not len(buffer):
            return 0
        index, skip = divmod(self._position, self._block_size)
        block = self._block(index)
        count = min(len(buffer), len(block) - skip)
        buffer[:count] = block[skip : skip + count]
        self._position += count
        return count

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        start = index * self._block_size
        block = self._fetch(start, min(self._block_size, self._size - start))
        self.bytes_fetched += len(block)
        self._blocks[index] = block
        if len(self._blocks) > self._cached_blocks:
            self._blocks.popitem(last=False)
        return block


class MinioSource:
    """SourceObject over MinIO for one job, pinned to the event's etag."""

    def __init__(self, client: Minio, job: Job, *, max_size: int) -> None:
        self._client = client
        self._job = job
        self._max_size = max_size
        self._size: int | None = None

    async def size(self) -> int:
        if self._size is None:
            self._size = await asyncio.to_thread(self._stat_size)
        return self._size

    def open(self) -> io.BufferedReader:
        size = self._size if self._size is not None else self._stat_size()
        raw = RangeReader(self._get_range, size, name=self._job.key)
        return io.BufferedReader(raw, buffer_size=64 * 1024)

    async def read_all(self, max_bytes: int) -> bytes:
        size = await self.size()
        if size > max_bytes:
            raise ProcessingFailed(f"object is {size} bytes, over the limit of {max_bytes}")
        return await asyncio.to_thread(self._get_range, 0, size) if size else b""

    def _stat_size(self) -> int:
        request = self._job.request
        with (
            translated(lambda failure: processing_error(failure, "stat")),
            minio_operation("HeadObject", request.bucket, request.key),
        ):
            stat = self._client.stat_object(
                request.bucket, request.key, version_id=request.version_id or None
            )
        stored_etag = (stat.etag or "").strip('"')
        if request.etag and stored_etag != request.etag:
            raise ProcessingFailed(
                "the object changed since its event (a newer upload has its own event)"
            )
        size = stat.size or 0
        if request.size is not None and size != request.size:
            raise ProcessingFailed(f"stored size {size} differs from the event's {request.size}")
        if size > self._max_size:
            raise ProcessingFailed(
                f"object is {size} bytes, over MINIO_MAX_FILE_SIZE ({self._max_size})"
            )
        return size

    def _get_range(self, offset: int, length: int) -> bytes:
        request = self._job.request
        headers: dict[str, Any] | None = {"If-Match": f'"{request.etag}"'} if request.etag else None
        with (
            translated(lambda failure: processing_error(failure, f"read at {offset}")),
            minio_operation("GetObject", request.bucket, request.key) as span,
        ):
            span.set_attribute("voxpersona.range", f"{offset}-{offset + length - 1}")
            response = self._client.get_object(
                request.bucket,
                request.key,
                offset=offset,
                length=length,
                request_headers=headers,
                version_id=request.version_id or None,
            )
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()
