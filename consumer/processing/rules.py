"""Which created objects get which processors. Pure: no I/O beyond reading the rules file.

An event starts jobs only when it created content (Put, Post, Copy,
CompleteMultipartUpload) in a bucket and under a prefix of a rule, and its suffix or its
content type says audio. Tagging, retention and removals never do, nor does anything in
the results bucket (the processors' own output).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from consumer.config_file import load_json_file
from consumer.events import ObjectEvent, writes_content
from consumer.index import JobRequest
from consumer.processing.base import Job
from consumer.settings import Settings

AUDIO_SUFFIXES: Final = (
    ".ogg", ".oga", ".opus", ".wav", ".mp3", ".m4a", ".aac", ".mp4", ".flac", ".webm",
)  # fmt: skip
AUDIO_CONTENT_TYPES: Final = ("audio/*", "application/ogg")
DEFAULT_PROCESSORS: Final = ("audio-probe", "transcribe")


class Rule(BaseModel):
    """One rule of the rules file; an object matches the first rule that covers it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(min_length=1)
    prefix: str = ""
    suffixes: tuple[str, ...] = AUDIO_SUFFIXES
    content_types: tuple[str, ...] = AUDIO_CONTENT_TYPES
    processors: tuple[str, ...] = Field(DEFAULT_PROCESSORS, min_length=1)

    def covers(self, event: ObjectEvent) -> bool:
        """Bucket and prefix match, and the suffix or the content type says audio (a rule
        with neither list matches every object under its prefix)."""
        if event.bucket != self.bucket or not event.key.startswith(self.prefix):
            return False
        if not self.suffixes and not self.content_types:
            return True
        return _has_suffix(event.key, self.suffixes) or _has_type(
            event.content_type, self.content_types
        )


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: tuple[Rule, ...] = Field(min_length=1)


def default_rules(settings: Settings) -> tuple[Rule, ...]:
    return (Rule(bucket=settings.minio_audio_bucket_name),)


def load_rules(settings: Settings) -> tuple[Rule, ...]:
    """The rules of PROCESSING_RULES_FILE, or the built-in rule. Raises ConfigError."""
    path = settings.processing_rules_file
    if path is None:
        return default_rules(settings)
    return load_json_file(path, _RulesFile, "PROCESSING_RULES_FILE").rules


@dataclass(frozen=True)
class Planned:
    """A job to run, and where its event was read (for the DLQ)."""

    job: Job
    message_index: int  # index of the source message in the batch


def select_jobs(
    events: Iterable[tuple[ObjectEvent, int]],
    rules: Sequence[Rule],
    *,
    available: frozenset[str],
    results_bucket: str,
) -> list[Planned]:
    """The jobs a batch of (event, message index) starts, newest content per job only.

    Processors a rule names but that are not ``available`` (not configured here) are
    left out. Two events for one object in a batch (an overwrite) keep only the newer
    content's job: the older content is gone already.
    """
    latest: dict[tuple[str, str, str, str], Planned] = {}
    for event, index in events:
        if not writes_content(event) or event.bucket == results_bucket:
            continue
        rule = next((r for r in rules if r.covers(event)), None)
        if rule is None:
            continue
        for processor in rule.processors:
            if processor not in available:
                continue
            planned = Planned(_job(event, processor), index)
            ident = planned.job.request.ident
            if ident not in latest or _newer(planned.job, latest[ident].job):
                latest[ident] = planned
    return list(latest.values())


def _job(event: ObjectEvent, processor: str) -> Job:
    request = JobRequest(
        bucket=event.bucket,
        key=event.key,
        version_id=event.version_id,
        processor=processor,
        sequencer=event.sequencer,
        etag=event.etag,
        size=event.size,
    )
    trace_metadata = {
        name: value
        for name, value in event.user_metadata.items()
        if name in ("traceparent", "tracestate")
    }
    return Job(request, event.content_type, event.user_id, event.event_time, trace_metadata)


def _newer(job: Job, other: Job) -> bool:
    return (job.request.sequencer, job.event_time) > (other.request.sequencer, other.event_time)


def _has_suffix(key: str, suffixes: Sequence[str]) -> bool:
    lowered = key.lower()
    return any(lowered.endswith(suffix.lower()) for suffix in suffixes)


def _has_type(content_type: str | None, patterns: Sequence[str]) -> bool:
    if not content_type:
        return False
    bare = content_type.split(";", 1)[0].strip().lower()
    return any(fnmatch.fnmatchcase(bare, pattern.lower()) for pattern in patterns)
