"""Durations as people type them on the command line: ``90``, ``30s``, ``15m``, ``2h``,
``7d``, ``1w``. Pure; used by ``presign --expires`` and ``replay --since``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from consumer.errors import InvalidInput

_DURATION: Final = re.compile(r"(\d+)\s*([smhdw]?)")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_or_none(text: str) -> timedelta | None:
    """The duration ``text`` names, or None when it is not one (a bare number: seconds)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        return None
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_duration(text: str) -> timedelta:
    """Like ``duration_or_none``, but raises InvalidInput for anything else."""
    duration = duration_or_none(text)
    if duration is None:
        raise InvalidInput(f"duration {text!r} must be a number with s, m, h, d or w (e.g. 15m)")
    return duration
