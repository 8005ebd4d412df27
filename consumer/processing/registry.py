"""Processors are plugins: factories registered under the ``consumer.processors`` group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Final

import structlog

from consumer.errors import ConfigError
from consumer.processing.base import Processor
from consumer.settings import Settings

ENTRY_POINT_GROUP: Final = "consumer.processors"
log = structlog.get_logger(__name__)


def load_processors(settings: Settings) -> dict[str, Processor]:
    """Every registered processor that is configured here, by name.

    A factory that returns None is "not configured" (skipped, logged); one that raises
    is a configuration error.
    """
    found: dict[str, Processor] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            processor = entry.load()(settings)
        except Exception as exc:
            raise ConfigError(f"processor {entry.name!r} ({entry.value}) failed: {exc}") from exc
        if processor is None:
            log.info("processor not configured, skipped", processor=entry.name)
            continue
        found[entry.name] = processor
    return found
