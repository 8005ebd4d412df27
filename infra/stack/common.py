"""What every part of the stack shares: the one error type, the one way to speak, paths
and timeouts."""

from __future__ import annotations

import sys
from pathlib import Path

# infra/ (its kafka/ and minio/ files are package data) and the checkout holding it.
INFRA_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = INFRA_DIR.parent

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 40


class StackError(Exception):
    """An expected failure (missing tool, failed build, server not ready): one clear line."""


def say(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` of a log, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])
