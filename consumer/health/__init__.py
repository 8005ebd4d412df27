"""Health for SREs: the checks and the report (checks.py), the HTTP server with
``/healthz``, ``/readyz``, ``/status`` and ``/metrics`` inside ``run`` (server.py), and the
``status`` verb's report (status.py)."""

from consumer.health.checks import Check, HealthReporter, Shared, overall_status, status_report
from consumer.health.server import HealthServer
from consumer.health.status import fetch_or_build_status, status_url

__all__ = [
    "Check",
    "HealthReporter",
    "HealthServer",
    "Shared",
    "fetch_or_build_status",
    "overall_status",
    "status_report",
    "status_url",
]
