"""The retention role's OpenTelemetry instruments.

Created from a Meter, by default the global one: until a MeterProvider is installed they
cost nothing; tests hand in a Meter of their own provider to read the values back.
"""

from __future__ import annotations

from opentelemetry import metrics

from consumer.retention.decisions import Outcome, SweepItem

METER_NAME = "consumer.retention"


class RetentionMetrics:
    """Objects and bytes expired, skipped (by reason), errors, blocked sweeps, lag seen."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter(METER_NAME)
        self._expired = meter.create_counter(
            "retention.objects.expired",
            unit="{object}",
            description="Objects the sweeper deleted",
        )
        self._expired_bytes = meter.create_counter(
            "retention.expired", unit="By", description="Bytes the sweeper deleted"
        )
        self._skipped = meter.create_counter(
            "retention.objects.skipped",
            unit="{object}",
            description="Expired objects the sweeper kept, by reason",
        )
        self._errors = meter.create_counter(
            "retention.errors", unit="{error}", description="Deletions that failed"
        )
        self._sweeps = meter.create_counter(
            "retention.sweeps",
            unit="{sweep}",
            description="Sweep passes by result (completed, blocked, failed)",
        )
        self._lag = meter.create_gauge(
            "retention.indexer.lag",
            unit="{event}",
            description="Events the indexer had not consumed when the sweeper last checked",
        )

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
