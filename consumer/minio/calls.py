"""minio-py's blocking calls from async code: run in a worker thread, failures classified
(``consumer.minio.failures``) and raised as this package's errors, transient ones retried
with the settings' backoff through the one retry loop (``consumer.retry``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from consumer.errors import ConsumerError, RetriesExhausted
from consumer.minio.failures import MINIO_ERRORS, MinioFailure, as_error, classify_failure
from consumer.retry import retry
from consumer.settings import Settings

T = TypeVar("T")
Translate = Callable[[MinioFailure], ConsumerError]


@contextmanager
def translated(translate: Translate, settings: Settings | None = None) -> Iterator[None]:
    """Raise ``translate(classify_failure(exc))``, from ``exc``, for a MinIO failure in the block:
    the synchronous form, for code that already runs in a thread."""
    try:
        yield
    except MINIO_ERRORS as exc:
        raise translate(classify_failure(exc, settings)) from exc


async def minio_call(
    call: Callable[[], T],
    *,
    what: str,
    settings: Settings,
    error: type[ConsumerError] = ConsumerError,
    translate: Translate | None = None,
    retrying: bool = False,
) -> T:
    """Run the blocking ``call`` in a worker thread and return its result.

    A MinIO failure is raised as ``translate(failure)``, by default ``as_error(failure,
    what, error)``: NotFound, TlsFailed, ConnectionFailed, else ``error`` with ``retriable``
    set. With ``retrying``, retriable errors are tried again (MINIO_MAX_RETRIES more
    times, MINIO_RETRY_BACKOFF the base delay) and, when they persist, raised as
    ``error(..., retriable=True)``. Anything else the call raises passes through.
    """

    def default(failure: MinioFailure) -> ConsumerError:
        return as_error(failure, what, error)

    async def attempt() -> T:
        with translated(translate or default, settings):
            return await asyncio.to_thread(call)

    if not retrying:
        return await attempt()
    attempts = settings.minio_max_retries + 1
    try:
        return await retry(
            attempt, what=what, base_s=settings.minio_retry_backoff, max_attempts=attempts
        )
    except RetriesExhausted as exc:
        # The line names the operation once: the last error's own text, without its prefix.
        last = exc.__cause__
        origin = last.__cause__ if last is not None else None
        detail = (
            classify_failure(origin, settings).message if isinstance(origin, MINIO_ERRORS) else last
        )
        raise error(f"{what}: gave up after {attempts} attempts: {detail}", retriable=True) from exc
