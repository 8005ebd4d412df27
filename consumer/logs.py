"""structlog, configured once in ``main``: JSON when not on a TTY, readable console otherwise.

Standard-library loggers (aiokafka, urllib3, asyncio) go through the same processors, so
every line has one shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRET_FIELDS = frozenset(
    {"secret_key", "password", "access_key_secret", "authorization", "signature"}
)


def _redact_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: a field whose name says secret never reaches the output."""
    for key in event_dict.keys() & _SECRET_FIELDS:
        event_dict[key] = "<redacted>"
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


def configure_logging(level: str = "info", *, json_output: bool | None = None) -> None:
    """Set up structlog and route stdlib logging through it. Call once, from main."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
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
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_DowngradeTransientKafkaErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO (connection churn, group joins) is noise for operators.
    for noisy in ("aiokafka", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
