"""The sweeper: deletes what the sweeper policies expire, safely, and the ``retention``
role that runs it on an interval.

A pass, per policy: (1) refuse to delete anything while the indexer lags behind the events
topic beyond RETENTION_MAX_LAG — the index could be stale; (2) page through the index for
live objects older than the policy's age that match its prefix and metadata; (3) keep
those whose processing is pending or running (or, for a processed-only policy, not done);
(4) ask MinIO (HEAD) and keep what is gone, changed, younger than the age by its own
Last-Modified, under object-lock retention or legal hold; (5) delete the rest with
multi-object deletes, paced to RETENTION_DELETE_RATE. MinIO then publishes the removal
events, and the indexer de-indexes the objects and journals who deleted them: the
sweeper's user agent names the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import structlog
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject

from consumer.errors import ConnectionFailed, ConsumerError, NotFound
from consumer.events import RETENTION_AGENT_PRODUCT
from consumer.index import IndexStore, ObjectQuery, ObjectRecord
from consumer.kafka.lag import group_lag
from consumer.minio import (
    MINIO_ERRORS,
    FailureKind,
    MinioFailure,
    as_error,
    classify_failure,
    is_gone,
    minio_call,
    minio_client,
)
from consumer.retention.decisions import (
    Outcome,
    Pacer,
    StoredFacts,
    SweepItem,
    SweepReport,
    delete_error_outcome,
    lag_block,
    skip_for_jobs,
    skip_for_stored,
    stored_facts,
)
from consumer.retention.metrics import RetentionMetrics
from consumer.retention.policy import (
    Enforcement,
    RetentionPolicy,
    by_enforcement,
    load_policies,
)
from consumer.settings import Settings
from consumer.telemetry import minio_operation, tracer

log = structlog.get_logger(__name__)

PAGE_SIZE = 1000

OnItem = Callable[[SweepItem], None]


class Sweeper:
    """One pass at a time over the sweeper policies (lifecycle policies are MinIO's)."""

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        policies: Sequence[RetentionPolicy],
        *,
        metrics: RetentionMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self.policies = by_enforcement(policies, Enforcement.SWEEPER)
        self._metrics = metrics or RetentionMetrics()
        self._clients: dict[str, Minio] = {}

    async def sweep(
        self,
        *,
        dry_run: bool = False,
        on_item: OnItem | None = None,
        stop: asyncio.Event | None = None,
    ) -> SweepReport:
        """One pass; ``on_item`` sees every expired object as it is decided. Raises
        ConnectionFailed (MinIO or the index unreachable) after reporting what was done."""
        with tracer.start_as_current_span(
            "retention sweep", attributes={"voxpersona.retention.dry_run": dry_run}
        ) as span:
            report = await self._sweep(dry_run, on_item, stop)
            span.set_attributes(
                {
                    "voxpersona.retention.deleted": report.objects[Outcome.DELETED],
                    "voxpersona.retention.skipped": report.objects[Outcome.SKIPPED],
                    "voxpersona.retention.blocked": report.blocked is not None,
                }
            )
            return report

    async def _sweep(
        self, dry_run: bool, on_item: OnItem | None, stop: asyncio.Event | None
    ) -> SweepReport:
        report = SweepReport(dry_run=dry_run)
        report.blocked, report.lag = await self._lag_block()
        if report.blocked is not None:
            self._metrics.sweep("blocked")
            log.warning("retention sweep blocked", reason=report.blocked)
            return report

        def record(item: SweepItem) -> None:
            report.add(item)
            self._metrics.item(item)
            if on_item is not None:
                on_item(item)

        pacer = Pacer(self._settings.retention_delete_rate)
        try:
            for policy in self.policies:
                if stop is not None and stop.is_set():
                    break
                await self._sweep_policy(policy, dry_run, record, pacer, stop)
        except ConnectionFailed:
            self._metrics.sweep("failed")
            raise
        self._metrics.sweep("completed")
        return report

    async def _lag_block(self) -> tuple[str | None, int | None]:
        group, topic = self._settings.kafka_group_id, self._settings.kafka_events_topic
        try:
            lag = sum((await group_lag(self._settings, group, topic)).values())
        except ConnectionFailed as exc:
            return f"{exc}: the index may be stale, nothing deleted", None
        self._metrics.lag(lag)
        return lag_block(lag, self._settings.retention_max_lag, group, topic), lag

    async def _sweep_policy(
        self,
        policy: RetentionPolicy,
        dry_run: bool,
        record: OnItem,
        pacer: Pacer,
        stop: asyncio.Event | None,
    ) -> None:
        client = self._client_for(policy)
        now = datetime.now(UTC)
        cutoff = now - policy.max_age
        size = self._settings.retention_batch_size
        async for page in self._candidates(policy, cutoff):
            for start in range(0, len(page), size):
                chunk = page[start : start + size]
                # Pace first, then check and delete at once: the gap between an object's
                # HEAD and its DELETE stays one chunk's checks, not a pacing wait.
                if not dry_run and await _stopped_within(
                    stop, pacer.delay(len(chunk), time.monotonic())
                ):
                    return
                await self._sweep_chunk(client, policy, chunk, (cutoff, now), dry_run, record)
                if stop is not None and stop.is_set():
                    return

    async def _sweep_chunk(
        self,
        client: Minio,
        policy: RetentionPolicy,
        chunk: Sequence[ObjectRecord],
        moments: tuple[datetime, datetime],
        dry_run: bool,
        record: OnItem,
    ) -> None:
        """Check each candidate of ``chunk``, then delete (or list) those that may go."""
        cutoff, now = moments
        doomed: list[tuple[ObjectRecord, StoredFacts]] = []
        for candidate in chunk:
            item, stored = await self._judge(client, policy, candidate, cutoff, now)
            if item is not None:
                record(item)
            elif stored is not None:
                doomed.append((candidate, stored))
        if dry_run:
            for candidate, stored in doomed:
                record(_item(policy, candidate, stored, Outcome.WOULD_DELETE))
        elif doomed:
            for item in await self._delete(client, policy, doomed):
                record(item)

    async def _candidates(
        self, policy: RetentionPolicy, cutoff: datetime
    ) -> AsyncIterator[list[ObjectRecord]]:
        """Live index rows the policy covers that were created before ``cutoff``, by page.

        The first event time is never later than the content's own age, so this is a
        superset of the truly expired rows; MinIO's Last-Modified decides per object.
        """
        after: tuple[str, str, str] | None = None
        while True:
            page = await self._store.list_objects(
                ObjectQuery(
                    bucket=policy.bucket,
                    prefix=policy.prefix or None,
                    metadata=policy.metadata or None,
                    created_before=cutoff,
                    limit=PAGE_SIZE,
                    after=after,
                )
            )
            if not page:
                return
            yield page
            last = page[-1]
            after = (last.bucket, last.key, last.version_id)

    async def _judge(
        self,
        client: Minio,
        policy: RetentionPolicy,
        candidate: ObjectRecord,
        cutoff: datetime,
        now: datetime,
    ) -> tuple[SweepItem | None, StoredFacts | None]:
        """(an item when the object is kept or cannot be checked, None) or (None, what
        MinIO has) when it may go."""
        jobs = await self._store.jobs(bucket=candidate.bucket, key=candidate.key)
        reason = skip_for_jobs(policy, candidate, jobs)
        if reason is not None:
            return _item(policy, candidate, None, Outcome.SKIPPED, reason), None
        try:
            stored = await _stat(client, candidate, self._settings)
        except ConnectionFailed:
            raise
        except ConsumerError as exc:  # MinIO answered: this candidate fails, the sweep goes on
            return _item(policy, candidate, None, Outcome.FAILED, str(exc)), None
        reason = skip_for_stored(candidate, stored, cutoff, now)
        if reason is not None:
            return _item(policy, candidate, stored, Outcome.SKIPPED, reason), None
        return None, stored

    async def _delete(
        self,
        client: Minio,
        policy: RetentionPolicy,
        doomed: list[tuple[ObjectRecord, StoredFacts]],
    ) -> list[SweepItem]:
        attributes: dict[str, str | int] = {
            "voxpersona.retention.policy": policy.name,
            "aws.s3.bucket": policy.bucket,
            "voxpersona.objects": len(doomed),
        }
        with tracer.start_as_current_span("retention delete", attributes=attributes):
            errors = await _remove(client, policy.bucket, doomed, self._settings)
        items: list[SweepItem] = []
        for candidate, stored in doomed:
            error = errors.get((candidate.key, candidate.version_id))
            if error is None:
                items.append(_item(policy, candidate, stored, Outcome.DELETED))
            else:
                outcome, reason = delete_error_outcome(*error)
                items.append(_item(policy, candidate, stored, outcome, reason))
        deleted = [item for item in items if item.outcome is Outcome.DELETED]
        log.info(
            "retention deleted",
            policy=policy.name,
            bucket=policy.bucket,
            objects=len(deleted),
            bytes=sum(item.size or 0 for item in deleted),
            kept_or_failed=len(items) - len(deleted),
        )
        return items

    def _client_for(self, policy: RetentionPolicy) -> Minio:
        """A client whose user agent names the policy: MinIO copies it into the removal
        events, so the journal records why each object went."""
        client = self._clients.get(policy.name)
        if client is None:
            client = minio_client(self._settings)
            client.set_app_info(RETENTION_AGENT_PRODUCT, policy.name)
            self._clients[policy.name] = client
        return client


def _item(
    policy: RetentionPolicy,
    candidate: ObjectRecord,
    stored: StoredFacts | None,
    outcome: Outcome,
    reason: str | None = None,
) -> SweepItem:
    return SweepItem(
        policy=policy.name,
        bucket=candidate.bucket,
        key=candidate.key,
        version_id=candidate.version_id,
        size=stored.size if stored is not None else candidate.size,
        last_modified=stored.last_modified if stored is not None else None,
        outcome=outcome,
        reason=reason,
    )


def _stops_the_sweep(failure: MinioFailure) -> bool:
    """No answer (network, TLS) or a busy or failing server: the sweep stops with
    ConnectionFailed, whose line the CLI prints as is, and the next interval tries again.
    Any other answer fails only the candidates concerned."""
    return not failure.answered or failure.kind in (FailureKind.TRANSIENT, FailureKind.TLS)


def _connection_failed(failure: MinioFailure) -> ConsumerError:
    return as_error(failure, "", ConnectionFailed)


def _head_error(failure: MinioFailure) -> ConsumerError:
    """Gone: nothing to delete (NotFound). The sweep stopped (see ``_stops_the_sweep``):
    ConnectionFailed. Another answer: the candidate fails with ``HEAD: <code>``."""
    if failure.kind is FailureKind.GONE:
        return NotFound(failure.message)
    if _stops_the_sweep(failure):
        return as_error(failure, "", ConnectionFailed)
    return ConsumerError(f"HEAD: {failure.code}")


async def _stat(client: Minio, candidate: ObjectRecord, settings: Settings) -> StoredFacts | None:
    """MinIO's facts about the candidate's version; None when it no longer exists."""

    def head() -> Object:
        with minio_operation("HeadObject", candidate.bucket, candidate.key, expected=is_gone):
            return client.stat_object(
                candidate.bucket, candidate.key, version_id=candidate.version_id or None
            )

    try:
        stat = await minio_call(head, what="HEAD", settings=settings, translate=_head_error)
    except NotFound:
        return None
    return stored_facts(
        stat.etag or "",
        stat.size or 0,
        stat.last_modified or datetime.now(UTC),
        dict(stat.metadata or {}),
    )


async def _remove(
    client: Minio,
    bucket: str,
    doomed: list[tuple[ObjectRecord, StoredFacts]],
    settings: Settings,
) -> dict[tuple[str, str], tuple[str, str]]:
    """One multi-object delete; (error code, message) per failed (key, version)."""
    targets = [DeleteObject(c.key, c.version_id or None) for c, _ in doomed]

    def delete() -> dict[tuple[str, str], tuple[str, str]]:
        try:
            with minio_operation("DeleteObjects", bucket) as span:
                span.set_attribute("voxpersona.objects", len(targets))
                return {
                    (error.name or "", error.version_id or ""): (
                        error.code or "Unknown",
                        error.message or "",
                    )
                    for error in client.remove_objects(bucket, targets)
                }
        except MINIO_ERRORS as exc:
            failure = classify_failure(exc, settings)
            if _stops_the_sweep(failure):
                raise
            # The whole request was refused (e.g. no s3:DeleteObject permission).
            refused = (failure.code or "Unknown", failure.reason)
            return {(c.key, c.version_id): refused for c, _ in doomed}

    return await minio_call(delete, what="delete", settings=settings, translate=_connection_failed)


async def _stopped_within(stop: asyncio.Event | None, delay_s: float) -> bool:
    """Wait ``delay_s`` unless stopped first; True when stopped."""
    if stop is None:
        await asyncio.sleep(delay_s)
        return False
    if delay_s > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)
    return stop.is_set()


class RetentionWorker:
    """The ``retention`` role: a sweep every RETENTION_SWEEP_INTERVAL_S (burst: one)."""

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        policies: Sequence[RetentionPolicy] | None = None,
        *,
        metrics: RetentionMetrics | None = None,
    ) -> None:
        self._settings = settings
        self.sweeper = Sweeper(
            settings,
            store,
            load_policies(settings) if policies is None else policies,
            metrics=metrics,
        )
        self._stop = asyncio.Event()
        self.last_report: SweepReport | None = None
        self.deleted = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def status(self) -> dict[str, object]:
        """The counters /status shows."""
        last = self.last_report.summary() if self.last_report else None
        return {"deleted": self.deleted, "last_sweep": last}

    def summary(self) -> dict[str, int]:
        """The counters worth a line at shutdown."""
        return {"retention_deleted": self.deleted}

    async def run(self, *, burst: bool = False) -> SweepReport | None:
        policies = [policy.name for policy in self.sweeper.policies]
        log.info("retention running", sweeper_policies=policies)
        while not self.stopping:
            if policies:
                await self._one_pass()
            if burst:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._settings.retention_sweep_interval_s)
        return self.last_report

    async def _one_pass(self) -> None:
        try:
            report = await self.sweeper.sweep(stop=self._stop)
        except ConnectionFailed as exc:  # retried next interval; nothing half-done is lost
            log.warning("retention sweep interrupted", error=str(exc))
            return
        self.last_report = report
        self.deleted += report.objects[Outcome.DELETED]
        if report.blocked is None:
            log.info("retention sweep done", **report.summary())
