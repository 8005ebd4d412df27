"""The processor worker: consumer group "processor" on the events topic.

One batch at a time:

    getmany → select jobs (rules) → claim them in the index (pending) → run them, at most
    PROCESSING_CONCURRENCY at once, fetching paused meanwhile → commit offsets

Each job: running → the processor, under PROCESSING_TIMEOUT_S → its result as JSON in the
results bucket → done. Transient failures are retried with backoff and jitter up to
MINIO_MAX_RETRIES, then the job fails and its event goes to the DLQ with the reason;
permanent failures fail the job at once. Offsets are committed only once every job of
the batch has finished, so a crash means redelivery: finished jobs are skipped
(``job_should_run``), unfinished ones run again. Malformed messages are skipped here:
the indexer dead-letters them already.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from minio import Minio
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from consumer.errors import ConsumerError
from consumer.events import MalformedEvent, ObjectEvent, parse_message
from consumer.fetching import (
    DeadLetter,
    FetchPause,
    drained,
    new_clients,
    record_lag,
    send_dead_letters,
    start_clients,
    stop_clients,
)
from consumer.index import IndexStore, JobOutcome, JobStatus
from consumer.indexer import Batch, offsets_to_commit
from consumer.minio_client import minio_client
from consumer.processing.base import Job, ProcessingRetriable, Processor
from consumer.processing.rules import Planned, Rule, load_rules, select_jobs
from consumer.processing.source import MinioSource, describe_minio_error
from consumer.retry import RetriesExhausted, StopRequested, retry
from consumer.settings import Settings
from consumer.telemetry import (
    batch_span,
    instruments,
    kafka_attributes,
    minio_operation,
    object_attributes,
    record_error,
    tracer,
    upload_context,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

FETCH_POLL_INTERVAL_S = 1.0


def result_key(job: Job) -> str:
    """Where a job's result goes in the results bucket: derived from the source object,
    so a rerun overwrites it and each object has one result per processor. Pure."""
    version = job.version_id or "null"
    return f"{job.bucket}/{job.key}/{version}/{job.request.processor}.json"


def result_document(
    job: Job, result: Mapping[str, Any], *, attempt: int, finished_at: datetime
) -> dict[str, Any]:
    """The stored result: what was processed, by what, and what came out. Pure."""
    request = job.request
    return {
        "source": {
            "bucket": request.bucket,
            "key": request.key,
            "version_id": request.version_id,
            "etag": request.etag,
            "sequencer": request.sequencer,
            "size": request.size,
            "content_type": job.content_type,
            "user_id": job.user_id,
            "event_time": job.event_time.isoformat(),
        },
        "processor": request.processor,
        "attempt": attempt,
        "processed_at": finished_at.isoformat(),
        "result": dict(result),
    }


@dataclass
class ProcessorStats:
    batches: int = 0
    messages: int = 0
    jobs_claimed: int = 0
    done: int = 0
    failed: int = 0
    dead_lettered: int = 0
    attempts: int = 0
    by_processor: dict[str, int] = field(default_factory=dict)


class ProcessorWorker:
    """Runs the processors on new objects. ``run()`` until ``stop()`` (or drained)."""

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        processors: Mapping[str, Processor],
        *,
        rules: Sequence[Rule] | None = None,
        topic: str | None = None,
        group_id: str | None = None,
        minio: Minio | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._processors = dict(processors)
        self._rules = tuple(rules) if rules is not None else load_rules(settings)
        self.topic = topic or settings.kafka_events_topic
        self.group_id = group_id or settings.kafka_processor_group_id
        self._minio = minio or minio_client(settings)
        self._slots = asyncio.Semaphore(settings.processing_concurrency)
        self.stats = ProcessorStats()
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        _warn_about_unknown_processors(self._rules, self._processors)

    def stop(self) -> None:
        """Finish the jobs in flight (their retries stop waiting), then return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, *, burst: bool = False) -> ProcessorStats:
        """Process until ``stop()``; with ``burst``, return once every partition is drained."""
        self._consumer, self._producer = new_clients(self._settings, self.group_id)
        await start_clients(self._consumer, self._producer, self._settings)
        self._consumer.subscribe([self.topic])
        try:
            await self._loop(burst)
        finally:
            await self._close()
        return self.stats

    async def _close(self) -> None:
        await stop_clients(self._consumer, self._producer)
        for processor in self._processors.values():
            with contextlib.suppress(Exception):
                await processor.close()

    async def _loop(self, burst: bool) -> None:
        assert self._consumer is not None
        max_records = self._settings.processing_concurrency * 8
        while not self._stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=500, max_records=max_records)
            if batch:
                if not await self._process(batch):
                    log.info("stopped with jobs unfinished; their events will be redelivered")
                    return
            elif burst and await drained(self._consumer):
                return

    async def _process(self, batch: Batch) -> bool:
        """Run the batch's jobs and commit it; False if stopped before every job ended."""
        messages = sum(len(records) for records in batch.values())
        with batch_span(self.topic, self.group_id, messages):
            return await self._process_batch(batch)

    async def _process_batch(self, batch: Batch) -> bool:
        records = [record for tp in sorted(batch) for record in batch[tp]]
        self.stats.messages += len(records)
        planned = select_jobs(
            _events(records, self._settings.indexer_max_message_bytes),
            self._rules,
            available=frozenset(self._processors),
            results_bucket=self._settings.minio_results_bucket_name,
        )
        try:
            ended = await self._run_paused(planned, records)
        except StopRequested:
            return False
        letters = [letter for letter in ended if letter is not None]
        if letters:
            await self._send_dead_letters(letters)
        await self._commit(batch)
        self.stats.batches += 1
        assert self._consumer is not None
        record_lag(self._consumer, batch, self.group_id)
        return True

    async def _run_paused(
        self, planned: list[Planned], records: list[ConsumerRecord[bytes, bytes]]
    ) -> list[DeadLetter | None]:
        """Claim and run the jobs while fetching is paused and Kafka still polled."""
        if not planned:
            return []
        assert self._consumer is not None
        pause = FetchPause(self._consumer)

        async def keep_polling() -> None:
            while True:
                await pause.poll()
                await asyncio.sleep(FETCH_POLL_INTERVAL_S)

        poller = asyncio.create_task(keep_polling())
        try:
            claimed = await self._claim(planned)
            jobs = [
                asyncio.ensure_future(self._run_job(p, records[p.message_index])) for p in claimed
            ]
            try:
                return list(await asyncio.gather(*jobs))
            except BaseException:
                # Stopped (or cancelled): no job may outlive the batch; the unfinished ones
                # stay "running" and rerun after redelivery.
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                raise
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await poller
            pause.resume()

    async def _claim(self, planned: list[Planned]) -> list[Planned]:
        requests = [p.job.request for p in planned]
        chosen = await self._index_call(lambda: self._store.claim_jobs(requests), "claim jobs")
        wanted = {request.ident for request in chosen}
        claimed = [p for p in planned if p.job.request.ident in wanted]
        self.stats.jobs_claimed += len(claimed)
        skipped = len(planned) - len(claimed)
        if skipped:
            log.debug("jobs already finished, skipped", jobs=skipped)
        return claimed

    async def _run_job(
        self, planned: Planned, record: ConsumerRecord[bytes, bytes]
    ) -> DeadLetter | None:
        """One job in its span (in the upload's trace when the object carries one) and
        with its log context; its outcome counted."""
        job, request = planned.job, planned.job.request
        parent = upload_context(job.trace_metadata)
        batch_link = [Link(trace.get_current_span().get_span_context())]
        attributes = {
            **kafka_attributes(record.topic, self.group_id, record.partition, record.offset),
            **object_attributes(job.bucket, job.key, request.size, job.version_id),
            "voxpersona.processor": request.processor,
        }
        started = time.perf_counter()
        with (
            structlog.contextvars.bound_contextvars(
                bucket=job.bucket,
                key=job.key,
                processor=request.processor,
                partition=record.partition,
                offset=record.offset,
            ),
            tracer.start_as_current_span(
                f"process {request.processor}",
                context=parent,
                kind=SpanKind.CONSUMER,
                links=batch_link if parent is not None else None,
                attributes=attributes,
            ) as span,
        ):
            letter, outcome = await self._run_job_to_end(planned, record)
            span.set_attribute("voxpersona.job.outcome", outcome)
            if outcome != "done":
                span.set_status(Status(StatusCode.ERROR, outcome))
        labels = {"processor": request.processor, "outcome": outcome}
        instruments.jobs.add(1, labels)
        instruments.job_duration.record(time.perf_counter() - started, labels)
        return letter

    async def _run_job_to_end(
        self, planned: Planned, record: ConsumerRecord[bytes, bytes]
    ) -> tuple[DeadLetter | None, str]:
        """Run one job to its end: (the dead letter of its event when retries ran out,
        the outcome: done, failed or dead_lettered)."""
        job = planned.job
        request = job.request
        what = f"{request.processor} on {request.bucket}/{request.key}"
        started = time.perf_counter()
        async with self._slots:
            try:
                location = await retry(
                    lambda: self._attempt(job),
                    what=what,
                    base_s=self._settings.minio_retry_backoff,
                    cap_s=60.0,
                    max_attempts=self._settings.minio_max_retries + 1,
                    stop=self._stop,
                )
            except RetriesExhausted as exc:
                reason = str(exc)
                await self._finish(job, JobOutcome(JobStatus.FAILED, _ms(started), error=reason))
                self.stats.failed += 1
                log.warning("job failed after retries, dead-lettered", job=what, reason=reason)
                letter = DeadLetter(record, f"{request.processor}:RetriesExhausted", reason)
                return letter, "dead_lettered"
            except ConsumerError as exc:
                if isinstance(exc, StopRequested):
                    raise
                reason = str(exc)
                await self._finish(job, JobOutcome(JobStatus.FAILED, _ms(started), error=reason))
                self.stats.failed += 1
                log.warning("job failed", job=what, reason=reason)
                return None, "failed"
        outcome = JobOutcome(
            JobStatus.DONE,
            _ms(started),
            result_bucket=self._settings.minio_results_bucket_name,
            result_key=location,
        )
        await self._finish(job, outcome)
        self.stats.done += 1
        self.stats.by_processor[request.processor] = (
            self.stats.by_processor.get(request.processor, 0) + 1
        )
        log.info("job done", job=what, duration_ms=outcome.duration_ms)
        return None, "done"

    async def _attempt(self, job: Job) -> str:
        """One attempt: mark running, process under the timeout, store the result."""
        attempt = await self._store.start_job(job.request)
        self.stats.attempts += 1
        with tracer.start_as_current_span(
            "attempt", attributes={"voxpersona.job.attempt": attempt}
        ) as span:
            try:
                return await self._attempt_once(job, attempt)
            except ConsumerError as exc:
                record_error(span, exc)
                raise

    async def _attempt_once(self, job: Job, attempt: int) -> str:
        processor = self._processors[job.request.processor]
        source = MinioSource(self._minio, job, max_size=self._settings.minio_max_file_size)
        timeout = self._settings.processing_timeout_s
        try:
            result = await asyncio.wait_for(processor.process(job, source), timeout)
        except TimeoutError as exc:
            raise ProcessingRetriable(f"timed out after {timeout:g} s") from exc
        except ConsumerError:
            raise
        except Exception as exc:  # a plugin's bug or an unforeseen failure: retried
            log.exception("processor raised", processor=job.request.processor)
            raise ProcessingRetriable(f"{type(exc).__name__}: {exc}") from exc
        return await self._store_result(job, result, attempt)

    async def _store_result(self, job: Job, result: Mapping[str, Any], attempt: int) -> str:
        key = result_key(job)
        document = result_document(job, result, attempt=attempt, finished_at=datetime.now(UTC))
        body = json.dumps(document, ensure_ascii=False, indent=2).encode()
        bucket = self._settings.minio_results_bucket_name

        def put() -> None:
            with minio_operation("PutObject", bucket, key):
                self._minio.put_object(
                    bucket,
                    key,
                    io.BytesIO(body),
                    len(body),
                    content_type="application/json",
                    metadata={"voxpersona-processor": job.request.processor},
                )

        try:
            await asyncio.to_thread(put)
        except Exception as exc:
            raise describe_minio_error(exc, f"storing the result in {bucket}") from exc
        return key

    async def _finish(self, job: Job, outcome: JobOutcome) -> None:
        await self._index_call(lambda: self._store.finish_job(job.request, outcome), "finish job")

    async def _index_call(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Index calls wait for the index (retried until stop), like the indexer's writes."""
        return await retry(
            operation,
            what=what,
            base_s=self._settings.minio_retry_backoff / 4,
            cap_s=30.0,
            stop=self._stop,
        )

    async def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        assert self._producer is not None
        producer = self._producer

        async def send() -> None:
            await send_dead_letters(
                producer, self._settings.kafka_dlq_topic, letters, group_id=self.group_id
            )

        await retry(send, what="dead-letter write", base_s=0.5, cap_s=30.0, stop=self._stop)
        self.stats.dead_lettered += len(letters)

    async def _commit(self, batch: Batch) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        offsets = {
            tp: offset
            for tp, offset in offsets_to_commit(batch).items()
            if tp in consumer.assignment()
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Not fatal: the batch is redelivered and its finished jobs are skipped.
            log.warning("offset commit failed", error=str(exc))


def _events(
    records: list[ConsumerRecord[bytes, bytes]], max_bytes: int
) -> list[tuple[ObjectEvent, int]]:
    found: list[tuple[ObjectEvent, int]] = []
    for index, record in enumerate(records):
        try:
            events = parse_message(record.value, max_bytes=max_bytes)
        except MalformedEvent:
            continue  # the indexer dead-letters it; one DLQ entry per bad message is enough
        found.extend((event, index) for event in events)
    return found


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _warn_about_unknown_processors(rules: Sequence[Rule], available: Mapping[str, Any]) -> None:
    for name in sorted({p for rule in rules for p in rule.processors} - set(available)):
        log.warning("a rule names a processor that is not available here", processor=name)
