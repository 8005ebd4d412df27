"""Durations as people type them on the command line: ``90``, ``30s``, ``15m``, ``2h``,
``7d``, ``1w``. Pure; used by ``presign --expires`` and ``replay --since``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from consumer.errors import InvalidInput

# ASCII digits only: \d would also take other scripts' digits ("٣m"), which nobody means.
_DURATION: Final = re.compile(r"([0-9]+)\s*([smhdw]?)")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_or_none(text: str) -> timedelta | None:
    """The duration ``text`` names, or None when it is not one (a bare number: seconds).
    Raises InvalidInput for a duration longer than a timedelta holds (2.7 million years)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        return None
    try:
        return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except OverflowError:
        raise InvalidInput(f"duration {text!r} is too long") from None


def parse_duration(text: str) -> timedelta:
    """Like ``duration_or_none``, but raises InvalidInput for anything else."""
    duration = duration_or_none(text)
    if duration is None:
        raise InvalidInput(f"duration {text!r} must be a number with s, m, h, d or w (e.g. 15m)")
    return duration
