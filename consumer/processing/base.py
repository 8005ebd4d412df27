"""What a processor is, what it gets, and how it says it failed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from consumer.errors import ProcessingFailed, ProcessingRetriable
from consumer.index import JobRequest

# A plugin finds everything it needs here; its two errors live with the others in
# consumer.errors and are re-exported so that a plugin imports one module.
__all__ = ["Job", "ProcessingFailed", "ProcessingRetriable", "Processor", "SourceObject"]


@dataclass(frozen=True)
class Job:
    """One processor's work on the content one created-event announced."""

    request: JobRequest
    content_type: str | None
    user_id: str | None
    event_time: datetime
    # The uploader's W3C trace context from the object's metadata, so processing joins
    # the upload's trace.
    trace_metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return self.request.bucket

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def version_id(self) -> str:
        return self.request.version_id


class SourceObject(Protocol):
    """Read access to the job's object, pinned to the content of the event (its etag)."""

    async def size(self) -> int:
        """The stored size; raises ProcessingFailed if the object is gone or changed."""

    def open(self) -> Any:
        """A seekable binary file object over the object (ranged reads, bounded memory).

        Blocking: use it from a worker thread (``asyncio.to_thread``).
        """

    async def read_all(self, max_bytes: int) -> bytes:
        """The whole object; ProcessingFailed if it is larger than ``max_bytes``."""


class Processor(Protocol):
    """A plugin under the ``consumer.processors`` entry-point group.

    The entry point names a factory ``(settings) -> Processor | None``; None means "not
    configured here" (e.g. transcribe without TRANSCRIBE_BASE_URL) and the processor is
    skipped. ``process`` returns a JSON-serialisable result, stored in the results bucket.
    It raises ProcessingFailed (permanent) or ProcessingRetriable (transient); any other
    exception counts as transient.
    """

    name: str

    async def process(self, job: Job, source: SourceObject) -> Mapping[str, Any]: ...

    async def close(self) -> None: ...
