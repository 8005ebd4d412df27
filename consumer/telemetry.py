"""OpenTelemetry for SREs: tracing and metrics set up from the standard ``OTEL_*``
variables, the instruments every role records into, and span helpers.

Nothing here is required: until ``configure_telemetry`` runs (``python -m consumer run``
and every CLI verb that does work call it), the tracer and the meter are OpenTelemetry's
no-op proxies, so library use and tests pay nothing. Traces are exported only when
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``zipkin``, ``console``) or an OTLP
endpoint is set; metrics are always served in Prometheus format on ``/metrics`` (and pushed
over OTLP when ``OTEL_METRICS_EXPORTER`` says ``otlp``) by ``run``.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.errors import ConfigError
from consumer.logs import scrub_configured

SCOPE: Final = "voxpersona.consumer"
DEFAULT_SERVICE_NAME: Final = "voxpersona-consumer"
# The CLI's verbs (upload, presign, delete, …): their spans start the objects' traces.
CLI_SERVICE_NAME: Final = "voxpersona-cli"
# Seconds: from a few milliseconds (one index batch, one HEAD) to minutes (a transcription).
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
)  # fmt: skip
# The end-to-end delay (event time → indexed): 200 ms is the target at 100 uploads/s.
DELAY_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip

tracer = trace.get_tracer(SCOPE)
_propagator = TraceContextTextMapPropagator()
_configured = threading.Lock()
_done = False


# --- configuration ---------------------------------------------------------------------


def trace_exporters(env: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for. Pure.

    The specification's default for OTEL_TRACES_EXPORTER is "otlp"; here an unset variable
    means "otlp" only when an OTLP endpoint is configured, so a bare install exports
    nothing and does not log connection errors to a collector that does not exist.
    """
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if any(env.get(name) for name in endpoints) else []
    chosen = [name.strip().lower() for name in names.split(",")]
    return [name for name in chosen if name and name != "none"]


def otlp_protocol(env: Mapping[str, str], signal: str) -> str:
    """``grpc`` or ``http/protobuf`` (the default) for ``signal`` ("traces", "metrics")."""
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def configure_telemetry(
    env: Mapping[str, str] | None = None,
    *,
    with_metrics: bool = True,
    service_name: str = DEFAULT_SERVICE_NAME,
) -> None:
    """Install the tracer and meter providers once per process (later calls do nothing:
    OpenTelemetry allows one global provider of each). ``with_metrics=False`` (a CLI verb,
    which serves no /metrics) installs the tracer provider only; ``service_name`` is used
    unless ``OTEL_SERVICE_NAME`` names one."""
    global _done
    with _configured:
        if _done:
            return
        _done = True
    env = os.environ if env is None else env
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service_name})
    _configure_tracing(env, resource)
    if with_metrics:
        _configure_metrics(env, resource)


def flush_telemetry(timeout_s: float = 5.0) -> bool:
    """Export the spans still buffered (a CLI verb ends before the batch processor's next
    export); True when nothing is left or no SDK provider is installed."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is None:
        return True
    return bool(force_flush(int(timeout_s * 1000)))


def _configure_tracing(env: Mapping[str, str], resource: Any) -> None:
    exporters = trace_exporters(env)
    if not exporters:
        return
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from consumer.span_scrub import ScrubbingSpanProcessor

    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "console":
            provider.add_span_processor(
                ScrubbingSpanProcessor(BatchSpanProcessor(ConsoleSpanExporter()))
            )
        elif name == "otlp":
            provider.add_span_processor(
                ScrubbingSpanProcessor(BatchSpanProcessor(_otlp_span_exporter(env)))
            )
        elif name == "zipkin":
            provider.add_span_processor(
                ScrubbingSpanProcessor(BatchSpanProcessor(_zipkin_span_exporter(env)))
            )
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}"
                " (use otlp, zipkin, console or none)"
            )
    trace.set_tracer_provider(provider)


def _otlp_span_exporter(env: Mapping[str, str]) -> Any:
    if otlp_protocol(env, "traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _zipkin_span_exporter(env: Mapping[str, str]) -> Any:
    """Zipkin's JSON v2 API (``OTEL_EXPORTER_ZIPKIN_ENDPOINT``, by default
    http://localhost:9411/api/v2/spans): what the local stack's Zipkin server accepts."""
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    return ZipkinExporter(endpoint=env.get("OTEL_EXPORTER_ZIPKIN_ENDPOINT") or None)


def _configure_metrics(env: Mapping[str, str], resource: Any) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    readers: list[MetricReader] = [
        PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False)
    ]
    if "otlp" in [n.strip().lower() for n in env.get("OTEL_METRICS_EXPORTER", "").split(",")]:
        if otlp_protocol(env, "metrics") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(HttpMetricExporter()))
    metrics.set_meter_provider(MeterProvider(metric_readers=readers, resource=resource))


# --- the instruments -----------------------------------------------------------------


class TopicPartitionLike(Protocol):
    """aiokafka's TopicPartition, without importing Kafka into telemetry."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


@dataclass
class OperationTotals:
    """MinIO calls of this process, for /status's success rate and response time."""

    total: int = 0
    failed: int = 0
    seconds: float = 0.0
    # MinIO calls run in worker threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, elapsed_s: float, ok: bool) -> None:
        with self._lock:
            self.total += 1
            self.failed += 0 if ok else 1
            self.seconds += elapsed_s

    @property
    def success_rate(self) -> float:
        """Percent of calls that succeeded (100 with no calls yet)."""
        return (
            100.0 if not self.total else round(100.0 * (self.total - self.failed) / self.total, 2)
        )

    @property
    def average_ms(self) -> float:
        return 0.0 if not self.total else round(1000.0 * self.seconds / self.total, 2)


@dataclass(frozen=True)
class MetricSpec:
    """One instrument: what creates it and what the metrics reference says about it.

    The instruments are made from these tables only (``counter``, ``histogram``, ...), and the
    manual's metrics page is written from the same tables, so the two cannot disagree.
    """

    name: str
    kind: Literal["counter", "histogram", "gauge", "observable gauge"]
    unit: str
    description: str
    # The attributes its records carry (documentation: OpenTelemetry does not enforce them).
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        """The name the Prometheus exporter gives it: ``.`` as ``_``, the unit as a suffix
        (``{event}`` style annotations have none), ``_total`` on counters."""
        suffix = _PROMETHEUS_UNITS.get(self.unit, "")
        name = self.name.replace(".", "_") + (f"_{suffix}" if suffix else "")
        return name + ("_total" if self.kind == "counter" else "")


_PROMETHEUS_UNITS: Final = {"s": "seconds", "By": "bytes", "{event}/s": "per_second"}

EVENTS: Final = MetricSpec(
    "consumer.events",
    "counter",
    "{event}",
    "Events consumed, by kind (created, metadata_changed, removed, expired, noop, other, "
    "reconciled)",
    ("group", "kind"),
)
DEAD_LETTERS: Final = MetricSpec(
    "consumer.dead_letters",
    "counter",
    "{message}",
    "Messages sent to the DLQ, by group and error class",
    ("group", "error_class"),
)
LAG: Final = MetricSpec(
    "consumer.lag",
    "observable gauge",
    "{event}",
    "Events behind the partition's end, after each batch (only partitions this process holds)",
    ("group", "topic", "partition"),
)
BATCH_DURATION: Final = MetricSpec(
    "index.batch.duration",
    "histogram",
    "s",
    "One index batch: decode, write, commit",
    ("backend",),
    LATENCY_BUCKETS,
)
DELAY: Final = MetricSpec(
    "index.delay",
    "histogram",
    "s",
    "End-to-end delay: the event's time to the moment it was indexed (a replay shows as "
    "long delays)",
    (),
    DELAY_BUCKETS,
)
# The delay split where it is spent (docs/operations/minio-delivery.md).
DELAY_MINIO: Final = MetricSpec(
    "index.delay.minio",
    "histogram",
    "s",
    "MinIO's delivery: the event's time to its Kafka record's timestamp (MinIO's queue and "
    "its send loop)",
    (),
    DELAY_BUCKETS,
)
DELAY_CONSUMER: Final = MetricSpec(
    "index.delay.consumer",
    "histogram",
    "s",
    "The consumer's part: the Kafka record's timestamp to the moment the event was indexed",
    (),
    DELAY_BUCKETS,
)
JOBS: Final = MetricSpec(
    "processing.jobs",
    "counter",
    "{job}",
    "Processing jobs ended, by outcome: done, failed, dead_lettered",
    ("processor", "outcome"),
)
JOB_DURATION: Final = MetricSpec(
    "processing.duration",
    "histogram",
    "s",
    "Processing jobs from start to end, retries included",
    ("processor", "outcome"),
    LATENCY_BUCKETS,
)
MINIO_OPERATIONS: Final = MetricSpec(
    "minio.operations",
    "counter",
    "{operation}",
    "MinIO calls (HeadObject, GetObject, PutObject, DeleteObjects, HeadBucket, ...), by "
    "outcome: ok or error",
    ("operation", "outcome"),
)
MINIO_DURATION: Final = MetricSpec(
    "minio.operation.duration",
    "histogram",
    "s",
    "MinIO call latency",
    ("operation",),
    LATENCY_BUCKETS,
)
INDEX_OBJECTS: Final = MetricSpec(
    "index.objects",
    "observable gauge",
    "{object}",
    "Live objects per bucket (the latest versions, as usage counts them), counted from the "
    "index every INDEX_STORAGE_COUNT_INTERVAL_S",
    ("bucket",),
)
INDEX_SIZE: Final = MetricSpec(
    "index.size",
    "observable gauge",
    "By",
    "Bytes of live objects per bucket, counted from the index with index.objects",
    ("bucket",),
)
# MinIO's queue for the notify target, as the indexer role last read it from MinIO's own
# metrics (consumer/minio/notify_queue.py): its counters since it started, and a rate.
MINIO_QUEUE_LENGTH: Final = MetricSpec(
    "minio.notify.queue_length",
    "observable gauge",
    "{event}",
    "Events MinIO holds for the notify target, not yet sent to Kafka (invisible in the lag)",
    ("target",),
)
MINIO_FAILED_EVENTS: Final = MetricSpec(
    "minio.notify.failed_events",
    "observable gauge",
    "{event}",
    "Events MinIO's notify target refused since MinIO started (a full queue: dropped)",
    ("target",),
)
MINIO_TOTAL_EVENTS: Final = MetricSpec(
    "minio.notify.total_events",
    "observable gauge",
    "{event}",
    "Events handed to MinIO's notify target since MinIO started",
    ("target",),
)
MINIO_DELIVERY_RATE: Final = MetricSpec(
    "minio.notify.delivery_rate",
    "observable gauge",
    "{event}/s",
    "Events MinIO sent on to Kafka per second, between two readings at least 10 s apart",
    ("target",),
)
RECONCILE_RUNS: Final = MetricSpec(
    "reconcile.auto.runs",
    "counter",
    "{run}",
    "Automatic reconcile runs, by reason (failed_events, minio_restart, periodic, recheck)"
    " and outcome (done, failed)",
    ("reason", "outcome"),
)
RECONCILE_REPAIRS: Final = MetricSpec(
    "reconcile.auto.repairs",
    "counter",
    "{object}",
    "Objects the automatic reconcile repaired, by difference (missing, stale, extra)",
    ("difference",),
)
_MINIO_QUEUE_GAUGES: Final = {
    "queue_length": MINIO_QUEUE_LENGTH,
    "failed_events": MINIO_FAILED_EVENTS,
    "total_events": MINIO_TOTAL_EVENTS,
    "delivery_rate": MINIO_DELIVERY_RATE,
}
METRICS: Final = (
    EVENTS,
    DEAD_LETTERS,
    LAG,
    BATCH_DURATION,
    DELAY,
    DELAY_MINIO,
    DELAY_CONSUMER,
    JOBS,
    JOB_DURATION,
    MINIO_OPERATIONS,
    MINIO_DURATION,
    INDEX_OBJECTS,
    INDEX_SIZE,
    MINIO_QUEUE_LENGTH,
    MINIO_FAILED_EVENTS,
    MINIO_TOTAL_EVENTS,
    MINIO_DELIVERY_RATE,
    RECONCILE_RUNS,
    RECONCILE_REPAIRS,
)
"""Every instrument of the consumer but retention's (consumer/retention/metrics.py)."""


def _checked(spec: MetricSpec, kind: str) -> dict[str, Any]:
    if spec.kind != kind:
        raise ValueError(f"{spec.name} is a {spec.kind}, not a {kind}")
    return {"name": spec.name, "unit": spec.unit, "description": spec.description}


def counter(meter: metrics.Meter, spec: MetricSpec) -> metrics.Counter:
    """The counter ``spec`` describes."""
    return meter.create_counter(**_checked(spec, "counter"))


def histogram(meter: metrics.Meter, spec: MetricSpec) -> metrics.Histogram:
    """The histogram ``spec`` describes, with its bucket boundaries."""
    return meter.create_histogram(
        **_checked(spec, "histogram"), explicit_bucket_boundaries_advisory=spec.buckets
    )


class Gauge(Protocol):
    """A synchronous gauge (OpenTelemetry's API names its class privately)."""

    def set(self, amount: int | float) -> None: ...


def gauge(meter: metrics.Meter, spec: MetricSpec) -> Gauge:
    """The (synchronous) gauge ``spec`` describes."""
    return meter.create_gauge(**_checked(spec, "gauge"))


def observable_gauge(
    meter: metrics.Meter,
    spec: MetricSpec,
    callback: Callable[[CallbackOptions], Iterable[Observation]],
) -> metrics.ObservableGauge:
    """The observable gauge ``spec`` describes, read through ``callback``."""
    return meter.create_observable_gauge(**_checked(spec, "observable gauge"), callbacks=[callback])


class Instruments:
    """Every metric of the consumer but retention's, made from ``METRICS``."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter(SCOPE)
        self.events = counter(meter, EVENTS)
        self.dead_letters = counter(meter, DEAD_LETTERS)
        # Per (group, topic, partition), only for partitions this process holds: a
        # revoked partition's series goes (its new owner reports it).
        self._lag: dict[tuple[str, str, int], int] = {}
        observable_gauge(meter, LAG, self._observe_lag)
        self.batch_duration = histogram(meter, BATCH_DURATION)
        self.delay = histogram(meter, DELAY)
        self.delay_minio = histogram(meter, DELAY_MINIO)
        self.delay_consumer = histogram(meter, DELAY_CONSUMER)
        self.jobs = counter(meter, JOBS)
        self.job_duration = histogram(meter, JOB_DURATION)
        self.minio_operations = counter(meter, MINIO_OPERATIONS)
        self.minio_duration = histogram(meter, MINIO_DURATION)
        self.minio_totals = OperationTotals()
        # Objects and bytes per bucket, as the index last counted them (refreshed by the
        # service: an index query does not belong in a metrics callback).
        self.storage: dict[str, tuple[int, int]] = {}
        observable_gauge(meter, INDEX_OBJECTS, self._observe_objects)
        observable_gauge(meter, INDEX_SIZE, self._observe_bytes)
        # MinIO's queue as last read: name → (target id, value), set by the reader.
        self.minio_queue: dict[str, tuple[str, float]] = {}
        for name, spec in _MINIO_QUEUE_GAUGES.items():
            observable_gauge(meter, spec, self._minio_queue_observer(name))
        self.reconcile_runs = counter(meter, RECONCILE_RUNS)
        self.reconcile_repairs = counter(meter, RECONCILE_REPAIRS)

    def set_lag(self, group: str, topic: str, partition: int, lag: int) -> None:
        self._lag[(group, topic, partition)] = lag

    def forget_lag(
        self, group: str, partitions: Iterable[TopicPartitionLike] | None = None
    ) -> None:
        """Drop the lag series of ``partitions`` of ``group`` (all of the group's: None)."""
        dropped = None if partitions is None else {(tp.topic, tp.partition) for tp in partitions}
        for key in [k for k in self._lag if k[0] == group]:
            if dropped is None or key[1:] in dropped:
                del self._lag[key]

    def _observe_lag(self, _: CallbackOptions) -> Iterator[Observation]:
        for (group, topic, partition), lag in list(self._lag.items()):
            yield Observation(lag, {"group": group, "topic": topic, "partition": str(partition)})

    def _minio_queue_observer(
        self, name: str
    ) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def observe(_: CallbackOptions) -> Iterator[Observation]:
            if name in self.minio_queue:
                target, value = self.minio_queue[name]
                yield Observation(value, {"target": target})

        return observe

    def _observe_objects(self, _: CallbackOptions) -> Iterator[Observation]:
        for bucket, (objects, _size) in list(self.storage.items()):
            yield Observation(objects, {"bucket": bucket})

    def _observe_bytes(self, _: CallbackOptions) -> Iterator[Observation]:
        for bucket, (_objects, size) in list(self.storage.items()):
            yield Observation(size, {"bucket": bucket})


instruments = Instruments()


# --- spans ---------------------------------------------------------------------------


def upload_context(metadata: Mapping[str, str]) -> otel_context.Context | None:
    """The uploader's trace context from the object's user metadata (``traceparent``,
    ``tracestate``, as set with ``X-Amz-Meta-Traceparent``); None when absent or invalid."""
    carrier = {name: metadata[name] for name in ("traceparent", "tracestate") if name in metadata}
    if "traceparent" not in carrier:
        return None
    extracted = _propagator.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def traceparent_of(span: Span) -> str | None:
    """The W3C traceparent of ``span`` (for uploads that start a trace)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def kafka_attributes(
    topic: str, group: str, partition: int | None = None, offset: int | None = None
) -> dict[str, Any]:
    """OpenTelemetry messaging attributes for Kafka."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.operation.type": "process",
    }
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    return attributes


@contextmanager
def batch_span(topic: str, group: str, messages: int) -> Iterator[Span]:
    """The span of one consumed batch (indexer or processor), current while it runs."""
    attributes = {**kafka_attributes(topic, group), "messaging.batch.message_count": messages}
    with tracer.start_as_current_span(
        f"process {topic}", kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def object_attributes(
    bucket: str, key: str, size: int | None = None, version_id: str = ""
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"aws.s3.bucket": bucket, "aws.s3.key": key}
    if size is not None:
        attributes["voxpersona.object.size"] = size
    if version_id:
        attributes["voxpersona.object.version_id"] = version_id
    return attributes


def record_error(span: Span, exc: BaseException) -> None:
    """``exc`` on ``span``, its message and stack trace scrubbed as log lines are (whatever
    processor exports the span)."""
    stacktrace = "".join(traceback.format_exception(exc))
    span.record_exception(
        exc,
        attributes={
            "exception.message": scrub_configured(str(exc)),
            "exception.stacktrace": scrub_configured(stacktrace),
        },
    )
    span.set_status(error_status(exc))


def error_status(exc: BaseException) -> Status:
    """The ERROR status the SDK would set for ``exc`` ("Type: message"), scrubbed."""
    return Status(StatusCode.ERROR, scrub_configured(f"{type(exc).__name__}: {exc}")[:200])


@contextmanager
def minio_operation(
    operation: str,
    bucket: str,
    key: str | None = None,
    *,
    expected: Callable[[BaseException], bool] = lambda _: False,
) -> Iterator[Span]:
    """Wrap one MinIO call: a client span (S3 attributes), its latency and outcome in the
    metrics, and the process totals of /status. Re-raises whatever the call raised;
    an ``expected`` exception (say, a 404 the caller asks about) still counts as ok."""
    attributes: dict[str, Any] = {
        "rpc.system": "aws-api",
        "rpc.service": "S3",
        "rpc.method": operation,
        "aws.s3.bucket": bucket,
    }
    if key is not None:
        attributes["aws.s3.key"] = key
    started = time.perf_counter()
    ok = False
    # The status too is set here: the SDK's own would carry the exception's text unscrubbed.
    with tracer.start_as_current_span(
        f"S3.{operation}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
            ok = True
        except BaseException as exc:
            if expected(exc):
                ok = True
                span.set_status(error_status(exc))
            else:
                record_error(span, exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            instruments.minio_operations.add(
                1, {"operation": operation, "outcome": "ok" if ok else "error"}
            )
            instruments.minio_duration.record(elapsed, {"operation": operation})
            instruments.minio_totals.add(elapsed, ok)
