"""Telemetry's pure parts: which exporters the OTEL_* variables ask for, the uploader's
trace context, log scrubbing, and the health report's shape and verdicts."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
import structlog

from consumer.cli.output import status_table
from consumer.health import Check, overall_status, status_report
from consumer.health.server import _request_line
from consumer.logs import REDACTED, configure_logging, scrub
from consumer.telemetry import OperationTotals, otlp_protocol, trace_exporters, upload_context

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_no_exporter_unless_asked_for() -> None:
    assert trace_exporters({}) == []
    assert trace_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ["otlp"]
    assert trace_exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"}) == ["otlp"]
    assert trace_exporters({"OTEL_TRACES_EXPORTER": "console, otlp"}) == ["console", "otlp"]
    assert trace_exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert otlp_protocol({}, "traces") == "http/protobuf"
    assert otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "traces") == "grpc"
    both = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http"}
    assert otlp_protocol(both, "metrics") == "http"


def test_the_uploaders_traceparent_becomes_the_parent() -> None:
    from opentelemetry import trace

    context = upload_context({"traceparent": PARENT, "user-id": "5"})
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert format(span_context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert upload_context({"user-id": "5"}) is None
    assert upload_context({"traceparent": "not-a-traceparent"}) is None


def test_scrub_removes_secret_values_and_signed_url_parts() -> None:
    secrets = ("s3cr3t-key-value",)
    url = (
        "http://127.0.0.1:9000/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA123%2F20261121%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=5f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccddeeff00112233445566778899"
    )
    cleaned = scrub(f"failed with key s3cr3t-key-value at {url}", secrets)
    assert "s3cr3t-key-value" not in cleaned
    assert "5f1e2d3c4b5a" not in cleaned
    assert "AKIA123" not in cleaned
    assert f"X-Amz-Signature={REDACTED}" in cleaned
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in cleaned
    assert scrub("postgresql://vox:hunter22@127.0.0.1:5432/idx", ()) == (
        f"postgresql://vox:{REDACTED}@127.0.0.1:5432/idx"
    )
    assert scrub("nothing to hide here", secrets) == "nothing to hide here"


def test_log_lines_are_json_scrubbed_and_carry_trace_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    configure_logging("info", json_output=True, secrets=["the-secret-value"])
    try:
        tracer = TracerProvider().get_tracer("test")
        log = structlog.get_logger("test")
        with tracer.start_as_current_span("work") as span:
            log.info("inside", detail="uses the-secret-value", key_list=["the-secret-value"])
            logging.getLogger("aiokafka.test").warning("stdlib the-secret-value")
        log.info("outside")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    inside, stdlib, outside = lines
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert inside["trace_id"] == trace_id
    assert stdlib["trace_id"] == trace_id
    assert "trace_id" not in outside
    assert "the-secret-value" not in json.dumps(lines)
    assert inside["detail"] == f"uses {REDACTED}"


def test_status_verdicts() -> None:
    ok = {"kafka": Check("kafka", True, 1.0), "index": Check("index", True, 1.0)}
    down = {**ok, "minio": Check("minio", False, 5000.0, "no answer")}
    assert overall_status(ok, 0, 100.0) == "healthy"
    assert overall_status(ok, 5000, 100.0) == "degraded"
    assert overall_status(ok, 0, 50.0) == "degraded"
    assert overall_status(down, 0, 100.0) == "unhealthy"


def test_status_report_has_the_seeds_fields_plus_lag_and_dlq() -> None:
    totals = OperationTotals()
    totals.add(0.010, ok=True)
    totals.add(0.030, ok=False)
    checks = {"kafka": Check("kafka", True, 1.5)}
    report = status_report(
        checks, {"indexer": {0: 3, 1: 4}, "processor": None}, 2, totals, {"indexer": {}}, NOW
    )
    assert report["status"] == "degraded"  # half the MinIO calls failed
    assert report["connection_status"] == "connected"
    assert report["success_rate"] == 50.0
    assert report["average_response_time"] == 20.0
    assert report["operations_total"] == 2
    assert report["lag"] == {"indexer": {"total": 7, "partitions": {0: 3, 1: 4}}, "processor": None}
    assert report["dlq_messages"] == 2
    table = status_table({**report, "service": "running"})
    assert "lag indexer            7" in table
    assert "kafka                  ok (1.5 ms)" in table


def test_a_role_waiting_on_a_failing_call_makes_the_report_degraded() -> None:
    """Every check answers (a full disk under SQLite still answers reads), yet the indexer
    retries its write: the report says degraded, and which role waits on what."""
    checks = {"kafka": Check("kafka", True, 1.0), "index": Check("index", True, 1.0)}
    waiting = {"indexer": {"last_failure": "index write: SQLite index cannot grow"}}
    calm = {"indexer": {"last_failure": None}}
    report = status_report(checks, {}, 0, OperationTotals(), waiting, NOW)
    assert report["status"] == "degraded"
    assert report["workers"]["indexer"]["last_failure"].startswith("index write")
    assert status_report(checks, {}, 0, OperationTotals(), calm, NOW)["status"] == "healthy"
    broken = {**checks, "index": Check("index", False, 5000.0, "no answer")}
    assert status_report(broken, {}, 0, OperationTotals(), waiting, NOW)["status"] == "unhealthy"


def test_request_line_parsing() -> None:
    assert _request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") == ("GET", "/metrics")
    with pytest.raises(ValueError, match="not enough values"):
        _request_line(b"GARBAGE\r\n\r\n")


def test_status_asks_loopback_for_wildcard_binds_and_brackets_ipv6() -> None:
    from consumer.health import status_url

    assert status_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/status"
    assert status_url("::", 8080) == "http://[::1]:8080/status"
    assert status_url("::1", 9) == "http://[::1]:9/status"
    assert status_url("10.0.0.5", 8080) == "http://10.0.0.5:8080/status"


def test_an_unknown_trace_exporter_is_a_config_error() -> None:
    from opentelemetry.sdk.resources import Resource

    from consumer.errors import ConfigError
    from consumer.telemetry import _configure_tracing

    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'"):
        _configure_tracing({"OTEL_TRACES_EXPORTER": "jaeger"}, Resource.create({}))


async def test_a_taken_health_port_is_one_clear_config_error() -> None:
    from consumer.errors import ConfigError
    from consumer.health import HealthReporter, HealthServer
    from consumer.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    reporter = HealthReporter(settings, None)
    first = HealthServer("127.0.0.1", 0, reporter)
    await first.start()
    try:
        second = HealthServer("127.0.0.1", first.port, reporter)
        with pytest.raises(ConfigError, match="HEALTH_HOST:HEALTH_PORT"):
            await second.start()
    finally:
        await first.close()


def test_the_zipkin_exporter_posts_to_the_configured_endpoint() -> None:
    from consumer.telemetry import _zipkin_span_exporter, trace_exporters

    env = {
        "OTEL_TRACES_EXPORTER": "zipkin",
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://127.0.0.1:9411/api/v2/spans",
    }
    assert trace_exporters(env) == ["zipkin"]
    exporter = _zipkin_span_exporter(env)
    assert exporter.endpoint == "http://127.0.0.1:9411/api/v2/spans"
