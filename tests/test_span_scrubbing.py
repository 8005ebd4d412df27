"""Exceptions recorded on spans are scrubbed like log lines: a configured secret or a
presigned URL's signature in an exception's message or stack trace never reaches an
exporter. With the real OpenTelemetry SDK and its in-memory exporter."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from consumer import logs
from consumer.errors import ConnectionFailed
from consumer.logs import REDACTED, configure_logging
from consumer.span_scrub import ScrubbingSpanProcessor
from consumer.telemetry import minio_operation

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
SIGNATURE = "0123456789abcdef0123456789abcdef"
MESSAGE = (
    f"GET http://vox:{SECRET}@minio.local:9000/audio/a.ogg"
    f"?X-Amz-Credential=AKIAEXAMPLE%2F20261121&X-Amz-Signature={SIGNATURE} failed"
)


@pytest.fixture
def secrets_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Logging configured with SECRET, as ``main`` configures it from the settings."""
    # Put back the process's configured logging afterwards.
    monkeypatch.setattr(logs, "_configured_setup", logs._configured_setup)
    configure_logging("info", json_output=True, secrets=[SECRET])
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def _exception_event(span: ReadableSpan) -> dict[str, object]:
    (event,) = [e for e in span.events if e.name == "exception"]
    return dict(event.attributes or {})


def _assert_clean(text: object) -> None:
    assert isinstance(text, str)
    assert SECRET not in text
    assert SIGNATURE not in text
    assert "AKIAEXAMPLE" not in text
    assert REDACTED in text


def test_an_exception_a_span_ends_with_is_scrubbed_before_export(
    secrets_configured: None,
) -> None:
    """The SDK records the exception itself (a span left by a raise): the processor
    ``configure_telemetry`` installs hands the exporter a scrubbed copy."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(ScrubbingSpanProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("test")

    def fetch() -> None:
        with tracer.start_as_current_span("fetch", attributes={"url.full": MESSAGE}):
            raise ConnectionFailed(MESSAGE)

    with pytest.raises(ConnectionFailed):
        fetch()
    (finished,) = exporter.get_finished_spans()
    recorded = _exception_event(finished)
    _assert_clean(recorded["exception.message"])
    _assert_clean(recorded["exception.stacktrace"])
    assert "ConnectionFailed" in str(recorded["exception.stacktrace"])
    assert finished.status.status_code is StatusCode.ERROR
    _assert_clean(finished.status.description)
    _assert_clean((finished.attributes or {})["url.full"])
    assert finished.name == "fetch"


def test_a_clean_span_is_exported_as_it_is(secrets_configured: None) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(ScrubbingSpanProcessor(SimpleSpanProcessor(exporter)))
    with provider.get_tracer("test").start_as_current_span("plain", attributes={"n": 1}):
        pass
    (finished,) = exporter.get_finished_spans()
    assert dict(finished.attributes or {}) == {"n": 1}
    assert finished.status.status_code is StatusCode.UNSET


def test_record_error_scrubs_at_the_source(
    secrets_configured: None, spans: InMemorySpanExporter
) -> None:
    """A MinIO call that fails: ``record_error`` scrubs the exception it records, whatever
    processor exports the span (the suite's provider has no scrubbing processor)."""
    with pytest.raises(ConnectionFailed), minio_operation("GetObject", "audio", "a.ogg"):
        raise ConnectionFailed(MESSAGE)
    (finished,) = [s for s in spans.get_finished_spans() if s.name == "S3.GetObject"]
    recorded = _exception_event(finished)
    _assert_clean(recorded["exception.message"])
    _assert_clean(recorded["exception.stacktrace"])
    assert recorded["exception.type"] == "consumer.errors.ConnectionFailed"
    _assert_clean(finished.status.description)
