"""``minio-notify.json``: the bucket notifications this project wants, loaded and checked.

Pure: reading the file is the only I/O, and applying it to MinIO lives in provisioning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consumer.errors import ConfigError
from consumer.settings import Settings

_ARN_PATTERN = re.compile(r"^arn:minio:sqs:[^:]*:(?P<id>[^:]+):kafka$")
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")
# "s3:<Category>:<Name-or-*>", e.g. s3:ObjectCreated:* or s3:ObjectRemoved:Delete.
_EVENT_PATTERN = re.compile(r"^s3:[A-Za-z]+:(\*|[A-Za-z]+)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NotifyTarget(_Frozen):
    """The server-side Kafka target (configured by MINIO_NOTIFY_KAFKA_*_<ID>)."""

    id: str = Field(min_length=1)
    arn: str

    @model_validator(mode="after")
    def _arn_names_the_target(self) -> NotifyTarget:
        match = _ARN_PATTERN.match(self.arn)
        if match is None:
            raise ValueError(
                f"target.arn {self.arn!r} is not of the form arn:minio:sqs::<ID>:kafka"
            )
        if match.group("id") != self.id:
            raise ValueError(
                f"target.arn names id {match.group('id')!r} but target.id is {self.id!r}"
            )
        return self


class NotifyRule(_Frozen):
    """One QueueConfiguration: which events, filtered by key prefix/suffix."""

    id: str = Field(min_length=1, max_length=255)
    events: tuple[str, ...] = Field(min_length=1)
    prefix: str = ""
    suffix: str = ""

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: tuple[str, ...]) -> tuple[str, ...]:
        bad = [event for event in events if not _EVENT_PATTERN.match(event)]
        if bad:
            raise ValueError(f"unknown S3 event name(s): {', '.join(bad)}")
        return tuple(sorted(set(events)))


class BucketNotifications(_Frozen):
    bucket: str = Field(min_length=3, max_length=63)
    rules: tuple[NotifyRule, ...] = Field(min_length=1)


class NotifyConfig(_Frozen):
    """The whole file, with ``${SETTING}`` placeholders already resolved."""

    target: NotifyTarget
    buckets: tuple[BucketNotifications, ...]

    def for_bucket(self, bucket: str) -> tuple[NotifyRule, ...]:
        """The rules of one bucket; empty when the file does not mention it."""
        for entry in self.buckets:
            if entry.bucket == bucket:
                return entry.rules
        return ()


def _resolve_placeholders(value: Any, settings: Settings) -> Any:
    """Replace ``${NAME}`` in every string by the setting whose env name is NAME."""
    if isinstance(value, dict):
        return {key: _resolve_placeholders(item, settings) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_placeholders(item, settings) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        field = _field_by_env_name(name)
        if field is None:
            raise ConfigError(f"minio-notify.json: unknown setting ${{{name}}}")
        return str(getattr(settings, field))

    return _PLACEHOLDER.sub(substitute, value)


def _field_by_env_name(env_name: str) -> str | None:
    for name, info in Settings.model_fields.items():
        if info.alias == env_name and info.annotation is str:
            return name
    return None


def parse_notify_config(raw: dict[str, Any], settings: Settings) -> NotifyConfig:
    """Validate an already-decoded ``minio-notify.json``.

    Raises ConfigError with one line a person can act on.
    """
    data = {key: value for key, value in raw.items() if not key.startswith("$")}
    data = _resolve_placeholders(data, settings)
    try:
        config = NotifyConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise ConfigError(f"minio-notify.json: {where}: {first['msg']}") from None
    names = [entry.bucket for entry in config.buckets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"minio-notify.json: bucket listed twice: {', '.join(duplicates)}")
    return config


def load_notify_config(path: Path, settings: Settings) -> NotifyConfig:
    """Read and validate the notification file. Raises ConfigError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"notification config not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top")
    return parse_notify_config(raw, settings)


def notify_target_id(settings: Settings) -> str:
    """The notify target's id (MINIO_NOTIFY_KAFKA_*_<ID> on the server), from the
    notification file. Raises ConfigError."""
    return load_notify_config(settings.minio_notify_config, settings).target.id
