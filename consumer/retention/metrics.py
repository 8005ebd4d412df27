"""The retention role's OpenTelemetry instruments.

Created from a Meter, by default the global one: until a MeterProvider is installed they
cost nothing; tests hand in a Meter of their own provider to read the values back.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import metrics

from consumer.retention.decisions import Outcome, SweepItem
from consumer.telemetry import MetricSpec, counter, gauge

METER_NAME = "consumer.retention"

EXPIRED: Final = MetricSpec(
    "retention.objects.expired",
    "counter",
    "{object}",
    "Objects the sweeper deleted",
    ("policy", "bucket"),
)
EXPIRED_BYTES: Final = MetricSpec(
    "retention.expired", "counter", "By", "Bytes the sweeper deleted", ("policy", "bucket")
)
SKIPPED: Final = MetricSpec(
    "retention.objects.skipped",
    "counter",
    "{object}",
    "Expired objects the sweeper kept, by reason (processing, unprocessed, gone, changed, "
    "too_recent, retention, legal_hold)",
    ("policy", "bucket", "reason"),
)
ERRORS: Final = MetricSpec(
    "retention.errors", "counter", "{error}", "Deletions that failed", ("policy", "bucket")
)
SWEEPS: Final = MetricSpec(
    "retention.sweeps",
    "counter",
    "{sweep}",
    "Sweep passes by result: completed, blocked (the indexer lags), failed",
    ("result",),
)
INDEXER_LAG: Final = MetricSpec(
    "retention.indexer.lag",
    "gauge",
    "{event}",
    "Events the indexer had not consumed when the sweeper last checked",
)
METRICS: Final = (EXPIRED, EXPIRED_BYTES, SKIPPED, ERRORS, SWEEPS, INDEXER_LAG)
"""Every instrument of the retention role, in the order the metrics reference lists them."""


class RetentionMetrics:
    """Objects and bytes expired, skipped (by reason), errors, blocked sweeps, lag seen."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter(METER_NAME)
        self._expired = counter(meter, EXPIRED)
        self._expired_bytes = counter(meter, EXPIRED_BYTES)
        self._skipped = counter(meter, SKIPPED)
        self._errors = counter(meter, ERRORS)
        self._sweeps = counter(meter, SWEEPS)
        self._lag = gauge(meter, INDEXER_LAG)

    def item(self, item: SweepItem) -> None:
        attributes = {"policy": item.policy, "bucket": item.bucket}
        if item.outcome is Outcome.DELETED:
            self._expired.add(1, attributes)
            self._expired_bytes.add(item.size or 0, attributes)
        elif item.outcome is Outcome.SKIPPED:
            self._skipped.add(1, {**attributes, "reason": item.reason or "unknown"})
        elif item.outcome is Outcome.FAILED:
            self._errors.add(1, attributes)

    def sweep(self, result: str) -> None:
        self._sweeps.add(1, {"result": result})

    def lag(self, events: int) -> None:
        self._lag.set(events)
