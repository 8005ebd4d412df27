"""MinIO's queue for the notify target, watched: readings (``notify_queue``) turned into
the /status part, the metrics of ours, the delivery rate between readings, and how long
the reading has not changed (a queue that holds entries and does not move: MinIO does not
send them).

Used by the health reporter (each /status round) and by the automatic reconcile (its
triggers); each keeps its own ``QueueWatch``. Never raises from ``fields``: a reading that
failed is the report's ``error``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from consumer.errors import ConsumerError
from consumer.minio.notify_queue import (
    NotifyQueue,
    NotifyQueueReader,
    delivery_rate,
    queue_too_long,
    restarted,
    unchanged_since,
)
from consumer.settings import Settings
from consumer.telemetry import instruments

# MinIO caches its metrics 10 s: a rate over readings closer than that shows the cache.
RATE_WINDOW_S: Final = 10.0


class QueueWatch:
    """Reads the queue of the target ``target_id()`` names (resolved at the first read:
    it comes from the notification file, which may be wrong), keeping what the rate and
    the restart detection compare against."""

    def __init__(
        self, settings: Settings, target_id: Callable[[], str], timeout_s: float = 5.0
    ) -> None:
        self._settings = settings
        self._target_id = target_id
        self._timeout_s = timeout_s
        self._reader: NotifyQueueReader | None = None
        self._anchor: NotifyQueue | None = None  # the reading the rate is measured from
        # The first of the readings equal to the latest one (see ``unchanged_since``).
        self._unchanged_since: NotifyQueue | None = None
        self.latest: NotifyQueue | None = None
        self.rate: float | None = None

    @property
    def unchanged_s(self) -> float:
        """Seconds the reading has not changed: from the first reading equal to the
        latest to the latest (0 without readings; MinIO caches its answer 10 s, so a
        queue that moves can look unchanged that long)."""
        if self.latest is None or self._unchanged_since is None:
            return 0.0
        return self.latest.read_at_s - self._unchanged_since.read_at_s

    async def read(self) -> NotifyQueue:
        """A new reading, also published as metrics. Raises ConsumerError (ConfigError for
        a notification file without a target, ConnectionFailed, MetricsUnreadable)."""
        if self._reader is None:
            self._reader = NotifyQueueReader(
                self._settings, self._target_id(), timeout_s=self._timeout_s
            )
        current = await self._reader.read()
        anchor = self._anchor
        if anchor is None or restarted(anchor, current):
            self._anchor = current
        elif current.read_at_s - anchor.read_at_s >= RATE_WINDOW_S:
            self.rate = delivery_rate(anchor, current)
            self._anchor = current
        self._unchanged_since = unchanged_since(self._unchanged_since, self.latest, current)
        self.latest = current
        publish(current, self.rate)
        return current

    async def fields(self) -> dict[str, Any]:
        """The /status part: the reading, its rate, why it degrades the report (if it
        does), or the error that kept it from being read."""
        try:
            queue = await self.read()
        except ConsumerError as exc:
            return {"target": self._reader.target_id if self._reader else None, "error": str(exc)}
        degraded = queue_too_long(queue, self._settings.minio_queue_degraded_length)
        return {
            **queue.fields(),
            "delivery_rate": self.rate,
            "unchanged_s": round(self.unchanged_s, 1),
            "degraded": degraded,
            "error": None,
        }


def publish(queue: NotifyQueue, rate: float | None) -> None:
    """The reading as this process's gauges (minio_notify_*)."""
    values: dict[str, float] = {
        "queue_length": queue.queue_length,
        "failed_events": queue.failed_events,
        "total_events": queue.total_events,
    }
    if rate is not None:
        values["delivery_rate"] = rate
    for name, value in values.items():
        instruments.minio_queue[name] = (queue.target_id, value)
