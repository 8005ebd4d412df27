"""A real broker outage: aiokafka logs its reconnect attempts many times a second; what
reaches the consumer's output is a few lines a second, with the held-back count."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import structlog
from aiokafka import AIOKafkaConsumer

from consumer.kafka.clients import kafka_client_options
from consumer.logs import KAFKA_LINES_PER_S, configure_logging
from infra.stack import Stack
from tests.conftest import StackEndpoints, unique_name

pytestmark = pytest.mark.integration

OUTAGE_S = 6.0


class _Count(logging.Handler):
    """Every aiokafka record, before the output handler's filters decide."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1


async def test_a_stopped_broker_logs_a_few_lines_a_second(
    stack: StackEndpoints, stack_control: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning", json_output=True)
    raw = _Count()
    logging.getLogger("aiokafka").addHandler(raw)
    # A group member as the consumer's roles make them: their client options, and no
    # auto-commit (aiokafka's last auto-commit on stop retries forever when the broker's
    # restart left the group coordinator unknown).
    consumer = AIOKafkaConsumer(
        stack.events_topic,
        **kafka_client_options(stack.settings()),
        group_id=unique_name("flood"),
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
        await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
        capsys.readouterr()
        await asyncio.to_thread(stack_control.stop_server, "kafka")
        try:
            started, before = time.monotonic(), raw.records
            polls = asyncio.create_task(_poll(consumer, OUTAGE_S))
            await polls
            elapsed = time.monotonic() - started
            flood = raw.records - before
            # The stack's own messages (stopping a server) are not log lines.
            err = capsys.readouterr().err.splitlines()
            lines = [json.loads(line) for line in err if line.startswith("{")]
        finally:
            await asyncio.to_thread(stack_control.start_server, "kafka")
    finally:
        logging.getLogger("aiokafka").removeHandler(raw)
        await asyncio.wait_for(consumer.stop(), 60)
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    kafka = [line for line in lines if str(line.get("logger", "")).startswith("aiokafka")]
    print(f"{flood} aiokafka records in {elapsed:.1f} s; {len(kafka)} lines written")
    windows = int(elapsed) + 2
    assert flood > windows * KAFKA_LINES_PER_S, "no flood: the outage was not seen"
    assert len(kafka) <= windows * KAFKA_LINES_PER_S
    assert any(line.get("suppressed") for line in kafka), "no line counted the held-back ones"


async def _poll(consumer: AIOKafkaConsumer, seconds: float) -> None:
    """Keep the consumer asking (and reconnecting) for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=200)
