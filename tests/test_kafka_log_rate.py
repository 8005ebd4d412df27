"""aiokafka's log flood during a broker outage is rate-limited: a few lines a second reach
the output, and the next line to pass carries how many were held back."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
import structlog

from consumer.logs import KAFKA_LINES_PER_S, RateLimit, configure_logging


def test_rate_limit_passes_a_few_per_window_and_counts_the_rest() -> None:
    limit = RateLimit(3, window_s=1.0)
    first_second = [limit.allow(10.0 + n / 100) for n in range(50)]
    assert first_second[:3] == [0, 0, 0]
    assert first_second[3:] == [None] * 47
    # The next window: the first line through reports the 47 held back, then it counts anew.
    assert limit.allow(11.0) == 47
    assert limit.allow(11.1) == 0
    assert limit.allow(11.2) == 0
    assert limit.allow(11.3) is None
    assert limit.allow(12.5) == 1


@pytest.fixture
def json_logging() -> Iterator[None]:
    """Logging as ``main`` sets it up (configured in the test, once capsys holds stderr)."""
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_an_aiokafka_flood_becomes_a_few_lines_with_a_count(
    json_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", json_output=True)
    conn, client = logging.getLogger("aiokafka.conn"), logging.getLogger("aiokafka.client")
    ours = logging.getLogger("consumer.indexer")
    started = time.monotonic()
    for n in range(500):
        (conn if n % 2 else client).error("Unable connect to node with id %d", n)
        if n % 100 == 0:
            ours.warning("our own line %d", n)
    windows = int(time.monotonic() - started) + 2  # the 1-s windows the loop touched
    flood = _lines(capsys.readouterr().err)
    kafka = [line for line in flood if str(line["logger"]).startswith("aiokafka")]
    assert 1 <= len(kafka) <= windows * KAFKA_LINES_PER_S
    assert len([line for line in flood if line["logger"] == "consumer.indexer"]) == 5
    time.sleep(1.05)  # the next window
    conn.error("Unable connect to node with id 9")
    (after,) = _lines(capsys.readouterr().err)
    held_back = sum(int(str(line.get("suppressed", 0))) for line in [*kafka, after])
    assert held_back == 500 - len(kafka), "every line held back is counted once"
    assert after["suppressed"]
    assert after["event"] == "Unable connect to node with id 9"
    assert after["level"] == "error"


def test_a_library_warning_about_a_lost_connection_is_one_line(
    json_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncpg's pool warns with the traceback of every connection an index outage breaks
    off; the line keeps the error, not the traceback. Our own errors keep theirs."""
    configure_logging("info", json_output=True)
    try:
        raise ConnectionResetError("connection was closed in the middle of operation")
    except ConnectionResetError:
        logging.getLogger("asyncpg.pool").warning(
            "Failed to restore the pool connection floor; retrying", exc_info=True
        )
        logging.getLogger("consumer.indexer").error("ours", exc_info=True)
    library, ours = _lines(capsys.readouterr().err)
    assert library["event"] == (
        "Failed to restore the pool connection floor; retrying: ConnectionResetError:"
        " connection was closed in the middle of operation"
    )
    assert "exception" not in library
    assert "Traceback" in str(ours["exception"])
