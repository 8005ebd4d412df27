"""Spans scrubbed like log lines before they are exported.

An exception recorded on a span carries its message and stack trace, which may hold a
configured secret (a key in a URL, a password in a DSN) or a presigned URL's signature.
``ScrubbingSpanProcessor`` wraps each exporting processor of ``configure_telemetry`` and
hands it scrubbed copies, whoever recorded the exception (``record_error``, a span ending
with one, a library's instrumentation). Imported only when tracing is configured: the
SDK is not loaded otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.trace import Status

from consumer.logs import scrub_configured


def _scrub_value(value: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, tuple | list) and any(isinstance(item, str) for item in value):
        return tuple(clean(item) if isinstance(item, str) else item for item in value)
    return value


def _scrub_attributes(
    attributes: Mapping[str, Any] | None, clean: Callable[[str], str]
) -> dict[str, Any] | None:
    """``attributes`` with every text scrubbed; None when nothing changed. Pure."""
    if not attributes:
        return None
    cleaned = {key: _scrub_value(value, clean) for key, value in attributes.items()}
    return cleaned if cleaned != dict(attributes) else None


def scrubbed_span(
    span: ReadableSpan, clean: Callable[[str], str] = scrub_configured
) -> ReadableSpan:
    """``span`` with its attributes, its events' attributes (an exception's message and
    stack trace) and its status description scrubbed by ``clean``; ``span`` itself when
    nothing needed it. Pure."""
    attributes = _scrub_attributes(span.attributes, clean)
    events = list(span.events)
    changed = attributes is not None
    for number, event in enumerate(events):
        event_attributes = _scrub_attributes(event.attributes, clean)
        if event_attributes is not None:
            events[number] = Event(event.name, event_attributes, event.timestamp)
            changed = True
    status = span.status
    if status.description:
        description = clean(status.description)
        if description != status.description:
            status = Status(status.status_code, description)
            changed = True
    if not changed:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes if attributes is None else attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanProcessor(SpanProcessor):
    """Hands ``inner`` (the exporting processor) scrubbed copies of the finished spans."""

    def __init__(self, inner: SpanProcessor, clean: Callable[[str], str] = scrub_configured):
        self._inner = inner
        self._clean = clean

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._inner.on_end(scrubbed_span(span, self._clean))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)
