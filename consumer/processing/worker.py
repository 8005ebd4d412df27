"""The processor worker: consumer group "processor" on the events topic.

A handler of the batch loop (consumer/kafka/batches.py), one batch at a time:

    select jobs (rules) → claim them in the index under this process's lease → run them,
    at most PROCESSING_CONCURRENCY at once, fetching paused meanwhile → (the loop) commit

Each job: running → the processor, under PROCESSING_TIMEOUT_S → its result as JSON in the
results bucket → done. Transient failures are retried with backoff and jitter up to
MINIO_MAX_RETRIES, then the job fails and its event goes to the DLQ with the reason;
permanent failures fail the job at once.

A job runs once while its runner lives. A claimed job carries a lease (this process's
owner id, an expiry) that a background task renews every quarter of PROCESSING_LEASE_S
while the batch runs. A process that receives the same event — after a rebalance moved
the partition, or a redelivery — finds the lease live and waits, re-asking now and then:
the runner finishes (done: nothing to do) or dies (the lease expires: the job is taken
over, its attempts carried on). Offsets are committed once every job of the batch ended,
so a crash means redelivery: finished jobs are skipped, unfinished ones taken over.

Malformed messages are dead-lettered by the indexer; by this worker too when it runs
without an indexer in its process (see PROCESSING_DEAD_LETTER_MALFORMED).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiokafka.structs import ConsumerRecord
from minio import Minio
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from consumer.errors import (
    ConsumerError,
    LeaseLost,
    ProcessingRetriable,
    RetriesExhausted,
    StopRequested,
)
from consumer.events import MalformedEvent, ObjectEvent, parse_message
from consumer.index import IndexStore, JobOutcome, JobStatus
from consumer.index.records import Lease
from consumer.kafka.batches import Batch, BatchLoop, BatchWork, LoopRole, LoopStats
from consumer.kafka.dead_letters import DeadLetter
from consumer.minio import minio_client
from consumer.processing.base import Job, Processor
from consumer.processing.rules import Planned, Rule, load_rules, select_jobs
from consumer.processing.source import MinioSource, describe_minio_error
from consumer.results import ResultLocation, index_transcript, result_location_key
from consumer.retry import retry
from consumer.settings import Settings
from consumer.telemetry import (
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


def new_owner_id() -> str:
    """This process's name on the leases it takes: readable for SREs, unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_check_interval_s(lease_s: float) -> float:
    """How often a job held by another runner's live lease is asked about again: often
    enough that a takeover follows the lease's expiry closely, never more than every 5 s."""
    return min(5.0, max(0.5, lease_s / 4))


def result_key(job: Job) -> str:
    """Where a job's result goes in the results bucket: derived from the source object
    (the one layout, consumer/results.py), so a rerun overwrites it and each object has
    one result per processor. Pure."""
    return result_location_key(
        ResultLocation(job.bucket, job.key, job.version_id, job.request.processor)
    )


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
class ProcessorStats(LoopStats):
    jobs_claimed: int = 0
    jobs_waited: int = 0  # jobs found under another runner's live lease, waited for
    done: int = 0
    failed: int = 0
    abandoned: int = 0  # jobs whose lease another process took over (ours had lapsed)
    attempts: int = 0
    by_processor: dict[str, int] = field(default_factory=dict)


class ProcessorWorker(LoopRole):
    """Runs the processors on new objects. ``run()`` until ``stop()`` (or drained)."""

    finish_before_revoke = False  # jobs run long; they hold leases instead

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
        dead_letter_malformed: bool = False,
    ) -> None:
        self._settings = settings
        self._store = store
        self._processors = dict(processors)
        self._rules = tuple(rules) if rules is not None else load_rules(settings)
        self.topic = topic or settings.kafka_events_topic
        self.group_id = group_id or settings.kafka_processor_group_id
        self._minio = minio or minio_client(settings)
        self._slots = asyncio.Semaphore(settings.processing_concurrency)
        self._dead_letter_malformed = dead_letter_malformed
        self.lease = Lease(new_owner_id(), settings.processing_lease_s)
        self.stats = ProcessorStats()
        self._loop = BatchLoop(
            settings,
            self,
            self.stats,
            topic=self.topic,
            group_id=self.group_id,
            max_records=settings.processing_concurrency * 8,
        )
        _warn_about_unknown_processors(self._rules, self._processors)

    async def run(self, *, burst: bool = False) -> ProcessorStats:
        """Process until ``stop()``; with ``burst``, return once every partition is drained."""
        log.info("processor starting", lease_owner=self.lease.owner)
        try:
            await self._loop.run(burst=burst)
        finally:
            for processor in self._processors.values():
                with contextlib.suppress(Exception):
                    await processor.close()
        return self.stats

    def status(self) -> dict[str, object]:
        """The counters /status shows."""
        return {**dataclasses.asdict(self.stats), "lease_owner": self.lease.owner}

    def summary(self) -> dict[str, int]:
        """The counters worth a line at shutdown."""
        stats = self.stats
        return {
            "jobs_done": stats.done,
            "jobs_failed": stats.failed,
            "jobs_dead_lettered": stats.dead_lettered,
        }

    # --- one batch -----------------------------------------------------------------------

    async def handle(self, batch: Batch, work: BatchWork) -> Sequence[DeadLetter]:
        """Run the batch's jobs; the dead letters of jobs out of retries (and of malformed
        messages, when this worker owns them). StopRequested if stopped before the end."""
        records = [record for tp in sorted(batch) for record in batch[tp]]
        events, malformed = _events(records, self._settings.processing_message_bytes)
        letters = list(malformed) if self._dead_letter_malformed else []
        planned = select_jobs(
            events,
            self._rules,
            available=frozenset(self._processors),
            results_bucket=self._settings.minio_results_bucket_name,
        )
        if planned:
            async with work.paused("jobs running"), self._renewing_leases():
                ended = await self._run_planned(planned, records, work)
            letters.extend(letter for letter in ended if letter is not None)
        return letters

    async def _run_planned(
        self, planned: list[Planned], records: list[ConsumerRecord[bytes, bytes]], work: BatchWork
    ) -> list[DeadLetter | None]:
        """Claim and run the jobs; jobs under another runner's live lease are asked about
        again until they ended there or their lease expired (then run here)."""
        jobs: list[asyncio.Future[DeadLetter | None]] = []
        waiting = planned
        announced = False
        try:
            try:
                while True:
                    runnable, waiting = await self._claim(waiting, work)
                    jobs.extend(
                        asyncio.ensure_future(self._run_job(p, records[p.message_index]))
                        for p in runnable
                    )
                    if not waiting:
                        break
                    if not announced:
                        announced = True
                        self.stats.jobs_waited += len(waiting)
                        log.info(
                            "jobs held by another runner's live lease; waiting",
                            jobs=len(waiting),
                            lease_s=self.lease.duration_s,
                        )
                    await work.wait(lease_check_interval_s(self.lease.duration_s))
            except StopRequested:
                # Stopping: the jobs under way end first, a paid call in flight is never
                # thrown away (the grace period's cancellation still bounds them).
                await asyncio.gather(*jobs, return_exceptions=True)
                raise
            ended = await asyncio.gather(*jobs, return_exceptions=True)
        except BaseException:
            # Cancelled: no job may outlive the batch; the unfinished ones keep their
            # rows and are taken over after redelivery.
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            raise
        return _outcomes(ended)

    async def _claim(
        self, planned: list[Planned], work: BatchWork
    ) -> tuple[list[Planned], list[Planned]]:
        """(the planned jobs leased to this process now, those held by a live lease)."""
        requests = [p.job.request for p in planned]
        claims = await work.retry(
            lambda: self._store.claim_jobs(requests, self.lease), "claim jobs"
        )
        run = {(r.ident, r.sequencer) for r in claims.run}
        held = {(r.ident, r.sequencer) for r in claims.held}
        runnable: list[Planned] = []
        waiting: list[Planned] = []
        for p in planned:
            wanted = (p.job.request.ident, p.job.request.sequencer)
            if wanted in run:
                run.discard(wanted)  # a job listed twice in the batch runs once
                runnable.append(p)
            elif wanted in held:
                held.discard(wanted)
                waiting.append(p)
        self.stats.jobs_claimed += len(runnable)
        skipped = len(planned) - len(runnable) - len(waiting)
        if skipped:
            log.debug("jobs already finished or superseded, skipped", jobs=skipped)
        return runnable, waiting

    @contextlib.asynccontextmanager
    async def _renewing_leases(self) -> AsyncIterator[None]:
        """Renew this process's leases while the block runs; if it ends early (stopped,
        cancelled), let go of them, so the next owner takes the jobs over at once."""

        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(self.lease.duration_s / 4)
                try:
                    await self._store.renew_leases(self.lease)
                except ConsumerError as exc:
                    if _being_cancelled():
                        # The renewal cut off by our cancellation ended with its own error
                        # (asyncpg's cancel request cannot reach a server that is down):
                        # stop as asked, or the block's end would wait for us forever.
                        raise asyncio.CancelledError from exc
                    log.warning("lease renewal failed; retried next round", error=str(exc))

        renewer = asyncio.create_task(renew_forever())
        ended = False
        try:
            yield
            ended = True
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not ended:
                release = Lease(self.lease.owner, 0.0)
                with contextlib.suppress(ConsumerError, asyncio.CancelledError):
                    released = await asyncio.shield(self._store.renew_leases(release))
                    log.info("leases released", jobs=released)

    # --- one job -------------------------------------------------------------------------

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
                    stop=self._loop.stop_event,
                )
            except LeaseLost as exc:
                # Our renewals lapsed (the index stalled) and another process took the job
                # over: it is theirs now; nothing is recorded here.
                self.stats.abandoned += 1
                log.warning(
                    "job taken over by another process, abandoned", job=what, reason=str(exc)
                )
                return None, "abandoned"
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
        if not await self._finish(job, outcome):
            self.stats.abandoned += 1
            log.warning("job ended after another process took it over", job=what)
            return None, "abandoned"
        self.stats.done += 1
        self.stats.by_processor[request.processor] = (
            self.stats.by_processor.get(request.processor, 0) + 1
        )
        log.info("job done", job=what, duration_ms=outcome.duration_ms)
        return None, "done"

    async def _attempt(self, job: Job) -> str:
        """One attempt: mark running, process under the timeout, store the result."""
        attempt = await self._index_call(
            lambda: self._store.start_job(job.request, self.lease.owner), "start job"
        )
        self.stats.attempts += 1
        with tracer.start_as_current_span(
            "attempt", attributes={"voxpersona.job.attempt": attempt}
        ) as span:
            try:
                location = await self._attempt_once(job, attempt)
            except ConsumerError as exc:
                record_error(span, exc)
                if not isinstance(exc, StopRequested):
                    # /status names a failing dependency of the processor (the
                    # transcription API has no check of its own) while it fails.
                    self.stats.note_failure(f"{job.request.processor}: {exc}")
                raise
        self.stats.note_failure(None)
        return location

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
        location = await self._store_result(job, result, attempt)
        # Searchable from now on; an index outage is waited out here, so the paid work
        # above is not done again for it.
        await self._index_call(
            lambda: index_transcript(self._store, job.request, result), "index transcript"
        )
        return location

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

    async def _finish(self, job: Job, outcome: JobOutcome) -> bool:
        """Record the outcome; False when the lease went to another process first."""
        owner = self.lease.owner
        return await self._index_call(
            lambda: self._store.finish_job(job.request, outcome, owner), "finish job"
        )

    async def _index_call(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Index calls wait for the index (retried until stop), like the indexer's writes;
        the batch's fetching is paused already."""
        return await retry(
            operation,
            what=what,
            base_s=self._settings.index_retry_backoff_s,
            cap_s=30.0,
            stop=self._loop.stop_event,
        )


def _events(
    records: list[ConsumerRecord[bytes, bytes]], max_bytes: int
) -> tuple[list[tuple[ObjectEvent, int]], list[DeadLetter]]:
    """The events of ``records`` with the index of their record, and the malformed
    records as dead letters (sent only where this worker owns them)."""
    found: list[tuple[ObjectEvent, int]] = []
    malformed: list[DeadLetter] = []
    for index, record in enumerate(records):
        try:
            events = parse_message(record.value, max_bytes=max_bytes)
        except MalformedEvent as exc:
            malformed.append(DeadLetter(record, exc.error_class, exc.reason))
            continue
        found.extend((event, index) for event in events)
    return found, malformed


def _outcomes(ended: Sequence[DeadLetter | BaseException | None]) -> list[DeadLetter | None]:
    """The jobs' dead letters, once every job ended; a job's error raised (a failure
    before StopRequested, which only says the batch stopped early)."""
    errors = [e for e in ended if isinstance(e, BaseException)]
    if errors:
        raise next((e for e in errors if not isinstance(e, StopRequested)), errors[0])
    return [e for e in ended if not isinstance(e, BaseException)]


def _being_cancelled() -> bool:
    """Whether this task was asked to stop, even if another error replaced the
    cancellation on its way up."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _warn_about_unknown_processors(rules: Sequence[Rule], available: Mapping[str, Any]) -> None:
    for name in sorted({p for rule in rules for p in rule.processors} - set(available)):
        log.warning("a rule names a processor that is not available here", processor=name)
