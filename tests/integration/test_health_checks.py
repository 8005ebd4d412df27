"""``/readyz`` and ``/status`` are cheap to ask often, against the real stack: requests
arriving together share one round of checks, an answer is reused for HEALTH_CACHE_S, the
Kafka probe is made once, and a dependency that hangs answers within the time limit
without piling up threads."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consumer.health import HealthReporter, HealthServer
from consumer.index import open_index
from consumer.settings import Settings
from consumer.telemetry import instruments
from tests.conftest import StackEndpoints

pytestmark = pytest.mark.integration

CONCURRENT = 20


def _health_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("health-minio")]


async def _get_all(base: str, paths: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        return list(await asyncio.gather(*(http.get(path) for path in paths)))


async def _serving(reporter: HealthReporter) -> HealthServer:
    server = HealthServer("127.0.0.1", 0, reporter)
    await server.start()
    return server


async def test_concurrent_requests_share_one_round_and_reuse_it_inside_the_ttl(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    settings = stack.settings(INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}")
    async with open_index(settings.index_url) as store:
        reporter = HealthReporter(settings, store, cache_s=3.0)
        server = await _serving(reporter)
        base = f"http://127.0.0.1:{server.port}"
        try:
            heads = instruments.minio_totals.total
            answers = await _get_all(base, ["/readyz"] * CONCURRENT + ["/status"] * CONCURRENT)
            assert [a.status_code for a in answers] == [200] * (2 * CONCURRENT)
            # One round for /readyz and one for /status, however many asked: one HEAD
            # of the bucket each, one Kafka probe for both.
            assert reporter.rounds == 2
            assert instruments.minio_totals.total - heads == 2
            assert reporter.kafka_clients_made == 1
            ready = {a.text for a in answers[:CONCURRENT]}
            assert len(ready) == 1, "every /readyz got the same round's answer"

            # Inside the TTL: the same answer again, nothing checked.
            again = await _get_all(base, ["/readyz", "/status"])
            assert again[0].text in ready
            assert again[1].json()["checked_at"] == answers[-1].json()["checked_at"]
            assert reporter.rounds == 2
            assert instruments.minio_totals.total - heads == 2

            # After it: a new round, over the same Kafka probe.
            await asyncio.sleep(3.1)
            later = await _get_all(base, ["/readyz"] * 5)
            assert [a.status_code for a in later] == [200] * 5
            assert reporter.rounds == 3
            assert instruments.minio_totals.total - heads == 3
            assert reporter.kafka_clients_made == 1
        finally:
            await server.close()


async def test_checks_in_a_row_reuse_the_kafka_probe(stack: StackEndpoints, tmp_path: Path) -> None:
    settings = stack.settings(INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}")
    async with open_index(settings.index_url) as store:
        reporter = HealthReporter(settings, store, cache_s=0)
        try:
            for _ in range(10):
                ready, checks = await reporter.ready()
                assert ready, checks
            report = await reporter.status()
            assert report["status"] in ("healthy", "degraded")
            assert reporter.rounds == 11
            assert reporter.kafka_clients_made == 1, "a new Kafka client per check"
        finally:
            await reporter.close()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """host:port of a listener that never answers (a hung server: the connection is
    accepted by the kernel, no byte ever comes back)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


async def test_a_hung_minio_and_kafka_answer_within_the_time_limit_and_threads_stay_bounded(
    stack: StackEndpoints, tmp_path: Path, blackhole: str
) -> None:
    settings: Settings = stack.settings(
        INDEX_URL=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        MINIO_ENDPOINT=blackhole,
        KAFKA_BOOTSTRAP_SERVERS=blackhole,
    )
    limit = 1.0
    async with open_index(settings.index_url) as store:
        threads_before = len(threading.enumerate())
        reporter = HealthReporter(settings, store, timeout_s=limit, cache_s=0)
        server = await _serving(reporter)
        base = f"http://127.0.0.1:{server.port}"
        try:
            most_threads = 0
            for _ in range(4):
                started = time.monotonic()
                answers = await _get_all(base, ["/readyz"] * CONCURRENT)
                elapsed = time.monotonic() - started
                most_threads = max(most_threads, len(threading.enumerate()))
                assert elapsed < limit + 1.5, f"/readyz took {elapsed:.1f} s"
                assert [a.status_code for a in answers] == [503] * CONCURRENT
                checks = answers[0].json()["checks"]
                # The request's own timeout ends it, inside the check's limit; on a loaded
                # machine the check's limit may come first (its thread still ends below).
                assert checks["minio"]["ok"] is False
                minio_error = checks["minio"]["error"]
                assert (
                    "timed out (ReadTimeoutError)" in minio_error
                    or f"no answer within {limit:g} s" in minio_error
                ), checks["minio"]
                assert checks["kafka"]["ok"] is False
                assert checks["index"]["ok"] is True
                assert len(_health_threads()) <= 1
            assert reporter.rounds == 4
            started = time.monotonic()
            status = (await _get_all(base, ["/status"]))[0]
            assert status.status_code == 503
            assert time.monotonic() - started < 6 * limit + 1.5
            print(
                f"threads: {threads_before} before, at most {most_threads} during;"
                f" last /readyz round {elapsed:.2f} s, /status {time.monotonic() - started:.2f} s"
            )
            # One thread for the MinIO check, whatever it met; none for Kafka (the loop's).
            assert most_threads <= threads_before + 1, [t.name for t in threading.enumerate()]
        finally:
            await server.close()
        # The hung request ends by its own deadline: no thread outlives the check.
        deadline = time.monotonic() + limit + 2.0
        while _health_threads():
            assert time.monotonic() < deadline, "a health thread outlived its time limit"
            await asyncio.sleep(0.1)
