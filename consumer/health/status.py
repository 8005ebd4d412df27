"""``python -m consumer status``: the running consumer's ``/status``, or the same report
built here when none answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from consumer.errors import ConnectionFailed
from consumer.health.checks import CHECK_TIMEOUT_S, HealthReporter
from consumer.index import IndexStore
from consumer.settings import Settings

# Longer than /status's own worst case (the checks, then the lag and DLQ probes).
STATUS_TIMEOUT_S: Final = 45.0


def status_url(host: str, port: int) -> str:
    """Where ``status`` asks: a wildcard bind is asked on loopback; IPv6 in brackets."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a bind address, not a bind
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


async def fetch_or_build_status(
    settings: Settings, notify_target: Callable[[], str] | None = None
) -> dict[str, Any]:
    """The running consumer's /status (it knows its own counters); when none answers on
    HEALTH_HOST:HEALTH_PORT, the same report built here, marked unhealthy (with MinIO's
    queue for ``notify_target``, see HealthReporter)."""
    import httpx

    url = status_url(settings.health_host, settings.health_port)
    answered: Any = None
    try:
        async with httpx.AsyncClient(timeout=STATUS_TIMEOUT_S) as client:
            response = await client.get(url)
        if response.status_code in (HTTPStatus.OK, HTTPStatus.SERVICE_UNAVAILABLE):
            answered = response.json()
    except httpx.TimeoutException:
        raise ConnectionFailed(
            f"the consumer at {url} did not answer within {STATUS_TIMEOUT_S:g} s"
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
        answered = None
    if isinstance(answered, dict) and "status" in answered and "connections" in answered:
        answered["service"] = f"running ({url})"
        return answered
    from consumer.index import open_index

    store = open_index(settings.index_url, command_timeout_s=settings.index_command_timeout_s)
    try:
        await asyncio.wait_for(store.start(), CHECK_TIMEOUT_S)
    except Exception:  # the report says the index is down
        store_for_checks: IndexStore | None = None
    else:
        store_for_checks = store
    reporter = HealthReporter(settings, store_for_checks, notify_target=notify_target)
    try:
        report: dict[str, Any] = await reporter.status()
    finally:
        await reporter.close()
        await store.close()
    report["service"] = f"not running (nothing answers on {url})"
    report["status"] = "unhealthy"
    return report
