"""Where the stack is: endpoint values by the settings' environment names.

Taken from the environment when ``eval "$(python -m infra.stack env)"`` was run, otherwise
read from the running local stack (``./.stack``). Values stay in memory and in the
children's environment: the secret key and the PostgreSQL password are never printed,
put on a command line, or written to a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from consumer.settings import Settings

REQUIRED: Final = (
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "KAFKA_BOOTSTRAP_SERVERS",
    "POSTGRES_URL",
)
_OPTIONAL: Final = ("MINIO_USE_SSL", "KAFKA_EVENTS_TOPIC", "KAFKA_DLQ_TOPIC")


def stack_values() -> dict[str, str]:
    """Endpoint values, from the environment or else from the local stack's state dir."""
    if all(os.environ.get(name) for name in REQUIRED):
        return {name: os.environ[name] for name in (*REQUIRED, *_OPTIONAL) if os.environ.get(name)}
    from infra.stack import Stack  # only when needed: it is the fallback

    return Stack().env()


def settings_for(values: Mapping[str, str], **overrides: object) -> Settings:
    """Settings pointing at the stack; no ``.env`` file, so the run only depends on
    ``values`` and ``overrides`` (by env name)."""
    data: dict[str, object] = {k: v for k, v in values.items() if k != "POSTGRES_URL"}
    data.update(overrides)
    # Values are strings by env name; pydantic converts them, mypy cannot see through it.
    build: Any = Settings
    settings: Settings = build(_env_file=None, **data)
    return settings
