"""Processing results as the bot sees them: where each is stored, what one says, and the
transcript it gives the full-text index. Pure, except ``index_transcript`` (one index
write).

A result lives in the results bucket under ``<bucket>/<key>/<version|null>/<processor>.json``
(``result_location_key``, the one home of that layout: the processing worker writes
there and the bot's results feed reads it back), so it can be found from
the source object alone and parsed back from a results-bucket event (``parse_result_key``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from consumer.index import IndexStore, JobRequest, Transcript

RESULT_SUFFIX: Final = ".json"
NULL_VERSION: Final = "null"  # S3's name of the version of an unversioned object


@dataclass(frozen=True)
class ResultLocation:
    """Which object version and processor a result is of; ``version_id`` "" when the
    object is unversioned."""

    bucket: str
    key: str
    version_id: str
    processor: str


def result_location_key(location: ResultLocation) -> str:
    """The key of the result in the results bucket (the worker's ``result_key``)."""
    version = location.version_id or NULL_VERSION
    return f"{location.bucket}/{location.key}/{version}/{location.processor}{RESULT_SUFFIX}"


def parse_result_key(results_key: str) -> ResultLocation | None:
    """The location a results-bucket key names; None for keys that are not results.

    The source key may hold slashes itself: bucket is the first segment, version and
    processor the last two, the key everything between.
    """
    if not results_key.endswith(RESULT_SUFFIX):
        return None
    parts = results_key[: -len(RESULT_SUFFIX)].split("/")
    if len(parts) < 4 or not all((parts[0], parts[-2], parts[-1])):
        return None
    key = "/".join(parts[1:-2])
    if not key:
        return None
    version = "" if parts[-2] == NULL_VERSION else parts[-2]
    return ResultLocation(parts[0], key, version, parts[-1])


@dataclass(frozen=True)
class ProcessedResult:
    """One processor's outcome on one object version: ``done`` with its result document
    (as stored: source, processor, attempt, processed_at, result), or ``failed`` with the
    reason."""

    bucket: str
    key: str
    version_id: str
    processor: str
    status: Literal["done", "failed"]
    document: dict[str, Any] | None = None
    error: str | None = None
    result_key: str | None = None

    @property
    def result(self) -> dict[str, Any]:
        """What the processor returned (``{}`` when it failed)."""
        inner = (self.document or {}).get("result")
        return dict(inner) if isinstance(inner, Mapping) else {}

    @property
    def text(self) -> str | None:
        """The transcript, for a transcribing processor's result."""
        text = self.result.get("text")
        return text if isinstance(text, str) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "processor": self.processor,
            "status": self.status,
            "result_key": self.result_key,
            "error": self.error,
            "result": self.result if self.status == "done" else None,
        }


def transcript_of(request: JobRequest, result: Mapping[str, Any]) -> Transcript | None:
    """The searchable transcript in a processor's result: its ``text`` (and ``language``
    when given); None when the result has no text."""
    text = result.get("text")
    if not isinstance(text, str) or not text.strip():
        return None
    language = result.get("language")
    return Transcript(
        request.bucket,
        request.key,
        request.version_id,
        request.processor,
        text,
        language if isinstance(language, str) and language else None,
    )


async def index_transcript(
    store: IndexStore, request: JobRequest, result: Mapping[str, Any]
) -> bool:
    """Make the text of a finished job searchable (replacing what an earlier run of the
    processor on that version said); whether the result had text to index.

    The processing worker calls this once the result is stored, before ``finish_job``.
    Raises what ``store.put_transcript`` raises (IndexUnavailable is retriable).
    """
    transcript = transcript_of(request, result)
    if transcript is None:
        return False
    await store.put_transcript(transcript)
    return True
