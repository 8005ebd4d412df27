"""structlog, configured once in ``main``: JSON when not on a TTY, readable console otherwise.

Standard-library loggers (aiokafka, minio, urllib3, asyncio) go through the same
processors, so every line has one shape: inside a span it carries trace_id and span_id,
and secrets (configured values, presigned signatures, URL passwords) are scrubbed.
aiokafka's lines are rate-limited (a broker outage would flood the output otherwise).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final

import structlog
from opentelemetry import trace

_SECRET_FIELDS = frozenset(
    {"secret_key", "password", "access_key_secret", "authorization", "signature"}
)


REDACTED: Final = "<redacted>"
# Presigned URLs carry their signature and credential in the query; an Authorization
# header its signature; a URL its password. None of them may reach a log line.
_SIGNED_PARTS: Final = re.compile(
    r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+"
    r"|(Signature=)[0-9a-f]{16,}"
    r"|(://[^/:@\s]+:)[^@/\s]+(@)"
)


# What configure_logging was called with (the output resolved, the secrets as scrubbed):
# for a child process to log the same way (consumer/index/writer_process.py), and for the
# other outputs that must be scrubbed the same way (spans: consumer/telemetry.py).
LoggingSetup = tuple[str, bool, tuple[str, ...]]
_configured_setup: LoggingSetup | None = None


def configured_setup() -> LoggingSetup | None:
    """The (level, json_output, secrets) configure_logging was last called with; None
    before it was."""
    return _configured_setup


def scrub_configured(text: str) -> str:
    """``text`` scrubbed of the configured secrets and signed-URL parts (as log lines are)."""
    return scrub(text, () if _configured_setup is None else _configured_setup[2])


def long_secrets(secrets: Iterable[str]) -> tuple[str, ...]:
    """The values worth scrubbing, longest first (a long secret containing a shorter one
    is replaced whole). Short values would blank out ordinary words; real secrets are
    long. Pure."""
    return tuple(sorted({v for v in secrets if len(v) >= 6}, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every known secret value and signed-URL part replaced. Pure."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _SIGNED_PARTS.sub(_keep_names, text)


def _keep_names(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)}{REDACTED}"
    if match.group(2):
        return f"{match.group(2)}{REDACTED}"
    return f"{match.group(3)}{REDACTED}{match.group(4)}"


class _Redactor:
    """Last line of defence: a field whose name says secret, a configured secret value
    anywhere in a line, and the signed parts of URLs never reach the output."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = long_secrets(secrets)

    def __call__(
        self, _: Any, __: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in event_dict.keys() & _SECRET_FIELDS:
            event_dict[key] = REDACTED
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = scrub(value, self.secrets)
            elif not isinstance(value, int | float | bool | type(None)):
                # Anything else is rendered from its str/repr: scrub that text.
                text = str(value)
                cleaned = scrub(text, self.secrets)
                if cleaned != text:
                    event_dict[key] = cleaned
        return event_dict


def _add_trace_context(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """trace_id and span_id of the current span, so a log line leads to its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


# aiokafka logs these at ERROR while a group coordinator is being elected — a normal,
# seconds-long state on a fresh broker. Operators should not be paged for it.
_TRANSIENT_KAFKA_ERRORS = ("GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError")


class _DowngradeTransientKafkaErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name.startswith("aiokafka"):
            message = record.getMessage()
            if any(name in message for name in _TRANSIENT_KAFKA_ERRORS):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# Libraries whose warnings carry the traceback of an expected failure: asyncpg's pool
# logs "Failed to restore the pool connection floor; retrying" with the exception each
# time a connection breaks off during an index outage. The error's one line is enough.
_ONE_LINE_WARNINGS = ("asyncpg",)


class _OneLineLibraryWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno < logging.ERROR
            and record.exc_info
            and record.name.startswith(_ONE_LINE_WARNINGS)
        ):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


# During a broker outage aiokafka logs every failed connection and metadata refresh, for
# every client, many times a second: the lines that matter drown. At most this many of its
# lines a second reach the output; the next one to pass says how many were held back.
KAFKA_LINES_PER_S: Final = 5


class RateLimit:
    """At most ``per_window`` events per ``window_s`` (fixed windows). Pure but for the
    clock, which is passed in."""

    def __init__(self, per_window: int, window_s: float = 1.0) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._window_start = float("-inf")
        self._passed = 0
        self.suppressed = 0  # held back since the last event that passed

    def allow(self, now: float) -> int | None:
        """None when the event is held back; else how many were held back before it."""
        if now - self._window_start >= self.window_s:
            self._window_start, self._passed = now, 0
        if self._passed >= self.per_window:
            self.suppressed += 1
            return None
        self._passed += 1
        held, self.suppressed = self.suppressed, 0
        return held


class _RateLimitKafkaLogs(logging.Filter):
    """aiokafka's lines (every ``aiokafka.*`` logger, together) at most
    ``per_second`` a second; the first to pass after some were dropped carries their
    number as ``suppressed``."""

    def __init__(
        self, per_second: int = KAFKA_LINES_PER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._limit = RateLimit(per_second)
        self._clock = clock
        self._lock = threading.Lock()  # aiokafka logs from the loop, others from threads

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        with self._lock:
            held = self._limit.allow(self._clock())
        if held is None:
            return False
        if held:
            record.suppressed = held
        return True


def _add_suppressed(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The count of lines the rate limit held back before this one, as a field."""
    record = event_dict.get("_record")
    held = getattr(record, "suppressed", None)
    if held:
        event_dict["suppressed"] = held
    return event_dict


def configure_logging(
    level: str = "info", *, json_output: bool | None = None, secrets: Iterable[str] = ()
) -> None:
    """Set up structlog and route stdlib logging through it. Call once, from main.

    ``secrets`` are values (keys, passwords) replaced wherever they appear in a line.
    """
    if json_output is None:
        json_output = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_context,
    ]
    global _configured_setup
    redactor = _Redactor(secrets)
    _configured_setup = (level, json_output, redactor.secrets)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _add_suppressed],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # After format_exc_info: a traceback's text is scrubbed too.
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_DowngradeTransientKafkaErrors())
    handler.addFilter(_OneLineLibraryWarnings())
    handler.addFilter(_RateLimitKafkaLogs())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO (connection churn, group joins) is noise for operators.
    for noisy in ("aiokafka", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
