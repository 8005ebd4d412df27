"""The CLI's verbs that do work are traced through one decorator (consumer/cli/common.py
``traced``): the verb in its span, its failure recorded, uploads left as their objects'
trace roots. Spans are read from the suite's in-memory provider (conftest ``spans``)."""

from __future__ import annotations

import argparse

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from consumer.cli.common import traced
from consumer.errors import ConnectionFailed
from consumer.settings import Settings
from consumer.telemetry import tracer


def _settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_verb_runs_inside_its_span(spans: InMemorySpanExporter) -> None:
    @traced("delete")
    def delete(args: argparse.Namespace, settings: Settings) -> int:
        with tracer.start_as_current_span("S3.RemoveObjects"):
            return 0

    assert delete(argparse.Namespace(), _settings()) == 0
    finished = {span.name: span for span in spans.get_finished_spans()}
    verb, call = finished["delete"], finished["S3.RemoveObjects"]
    assert verb.parent is None
    assert call.parent is not None
    assert call.parent.span_id == verb.context.span_id
    assert dict(verb.attributes or {}) == {"voxpersona.cli.verb": "delete", "process.exit.code": 0}


def test_a_failing_verb_records_its_error(spans: InMemorySpanExporter) -> None:
    @traced("replay")
    def replay(args: argparse.Namespace, settings: Settings) -> int:
        raise ConnectionFailed("Kafka at 127.0.0.1:9 refused the connection")

    with pytest.raises(ConnectionFailed):
        replay(argparse.Namespace(), _settings())
    (verb,) = [span for span in spans.get_finished_spans() if span.name == "replay"]
    assert verb.status.status_code is StatusCode.ERROR
    assert "ConnectionFailed: Kafka at 127.0.0.1:9 refused" in (verb.status.description or "")
    assert [event.name for event in verb.events] == ["exception"]


def test_uploads_are_each_the_root_of_their_own_trace(spans: InMemorySpanExporter) -> None:
    @traced("upload", object_roots=True)
    def upload(args: argparse.Namespace, settings: Settings) -> int:
        for _ in range(2):
            with tracer.start_as_current_span("upload"):
                pass
        return 0

    assert upload(argparse.Namespace(), _settings()) == 0
    uploads = [span for span in spans.get_finished_spans() if span.name == "upload"]
    assert len(uploads) == 2
    assert all(span.parent is None for span in uploads)
    assert uploads[0].context.trace_id != uploads[1].context.trace_id
    assert not [
        span
        for span in spans.get_finished_spans()
        if "voxpersona.cli.verb" in (span.attributes or {})
    ]
