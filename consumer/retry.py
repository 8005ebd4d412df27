"""The one retry loop: exponential backoff with full jitter, branching on ``retriable``.

Permanent errors (``retriable = False``) are raised at once; retriable ones are retried
until ``max_attempts`` (None: until ``stop`` is set — the indexer never gives up on its
index, it waits for it).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from consumer.errors import (
    ConsumerError,
    RetriesExhausted,
    StopRequested,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)


def backoff_delay_s(attempt: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """Delay before retry number ``attempt`` (1-based): full jitter over base·2^(n-1), capped.

    ``jitter`` in [0, 1) is the random draw, passed in so the function stays pure.
    """
    ceiling: float = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return ceiling * jitter


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    base_s: float,
    cap_s: float = 30.0,
    max_attempts: int | None = None,
    on_wait: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> T:
    """Run ``operation`` until it succeeds, retrying ConsumerErrors whose ``retriable`` is set.

    ``on_wait`` runs while waiting between attempts (the indexer polls Kafka there so the
    group does not consider it dead). Raises the permanent error as is, RetriesExhausted
    after ``max_attempts``, or StopRequested when ``stop`` is set while waiting.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except ConsumerError as exc:
            if not exc.retriable:
                raise
            attempt += 1
            if max_attempts is not None and attempt >= max_attempts:
                raise RetriesExhausted(f"{what}: gave up after {attempt} attempts: {exc}") from exc
            delay = backoff_delay_s(attempt, base_s=base_s, cap_s=cap_s, jitter=random.random())  # noqa: S311
            log.warning(
                "retrying",
                what=what,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=str(exc),
                error_class=type(exc).__name__,
            )
            await _wait(delay, on_wait, stop)


async def _wait(
    delay_s: float, on_wait: Callable[[], Awaitable[None]] | None, stop: asyncio.Event | None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay_s
    while True:
        if stop is not None and stop.is_set():
            raise StopRequested("stopped while waiting to retry")
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        if on_wait is not None:
            await on_wait()
        await asyncio.sleep(min(remaining, 0.5))
