"""Losses at MinIO's door, repaired by the consumer itself: a reconcile with repair
(consumer/repair/reconcile.py, the path an operator's ``reconcile --repair`` takes) started when

* MinIO's failed-events count for the notify target rises (its queue was full: events
  dropped),
* MinIO restarted (its start time moved: a PUT in flight may have no event), or
* RECONCILE_INTERVAL_S passed since the group's last run (anti-entropy; 0: never), or
* a run of the first two kinds went ahead while events were still on their way (a
  recheck, once: ``follow_up``).

Narrowed: the buckets of the notification file; of their listing, only objects written
since the last clean point (the previous run's cutoff) and before this run's cutoff
(RECONCILE_SETTLE_S ago: newer writes are left to their events, still on their way).
A triggered run waits RECONCILE_SETTLE_S after the latest trigger, so what MinIO lost
before it is older than the cutoff. Deferred while MinIO's queue holds events or the
indexer lags more than RECONCILE_MAX_LAG (those objects would look missing, and be
repaired ahead of their own events), unless the queue stood still for RECONCILE_SETTLE_S
while Kafka could be reached (``still_while_reachable``): MinIO holds those entries for
good. Throttled (RECONCILE_MIN_GAP_S between runs of the group) and run by one process at
a time: the run holds a lease in the index's jobs table (the row ``~reconcile/auto``,
processor ``reconcile``; ``~`` is never in a bucket name), a job whose sequencer is the
run's generation, so two processes asking for the next generation race in one
transaction and one waits.

Each run is counted (reconcile_auto_runs_total, reconcile_auto_repairs_total) and logged
with its figures; the journal records its repairs as ``reconciled``, and repaired objects
are queued for processing, as with the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

import structlog
from minio import Minio

from consumer.errors import ConsumerError
from consumer.index import IndexStore, JobOutcome, JobRecord, JobRequest, JobStatus
from consumer.index.records import Lease
from consumer.kafka.lag import group_lag
from consumer.minio import minio_client
from consumer.minio.notify_queue import NotifyQueue, holds_unsent, restarted
from consumer.minio.queue_watch import QueueWatch
from consumer.processing.worker import new_owner_id
from consumer.repair.compare import Difference, KeyFilter, Mismatch, ReconcileReport, watched
from consumer.repair.reconcile import Reconciler
from consumer.settings import Settings
from consumer.setup.notify_config import load_notify_config, notify_target_id
from consumer.telemetry import instruments

log = structlog.get_logger(__name__)

LEASE_BUCKET: Final = "~reconcile"
LEASE_KEY: Final = "auto"
LEASE_PROCESSOR: Final = "reconcile"
# How often the task looks when MinIO's metrics are not read (periodic runs only).
IDLE_POLL_S: Final = 60.0


class Reason(StrEnum):
    FAILED_EVENTS = "failed_events"  # MinIO's target refused events: dropped
    MINIO_RESTART = "minio_restart"  # a PUT in flight at the stop may have no event
    PERIODIC = "periodic"  # anti-entropy
    # A triggered run went ahead while events were still on their way (in MinIO's queue
    # or not yet indexed): one more look once they have arrived (see ``follow_up``).
    RECHECK = "recheck"


# --- pure -------------------------------------------------------------------------------


def triggers(previous: NotifyQueue | None, current: NotifyQueue) -> set[Reason]:
    """What two successive readings of MinIO's queue call for. Pure."""
    if previous is None:
        return set()
    if restarted(previous, current):
        return {Reason.MINIO_RESTART}
    if current.failed_events > previous.failed_events:
        return {Reason.FAILED_EVENTS}
    return set()


@dataclass
class Pending:
    """Reasons waiting for a run, and when the latest of them was seen (epoch seconds):
    while MinIO keeps dropping, its failed-events count keeps rising, and the run waits
    until the drops are older than its cutoff."""

    reasons: set[Reason] = field(default_factory=set)
    latest_s: float | None = None

    def add(self, reasons: set[Reason], now_s: float) -> None:
        if reasons - {Reason.PERIODIC}:
            self.latest_s = now_s
        self.reasons |= reasons

    def clear(self) -> None:
        self.reasons, self.latest_s = set(), None

    def take(self) -> Pending:
        """The reasons now (for a run), leaving none pending."""
        taken = Pending(set(self.reasons), self.latest_s)
        self.clear()
        return taken

    def put_back(self, taken: Pending) -> None:
        """A run that failed: its reasons pending again, as they were."""
        self.reasons |= taken.reasons
        if taken.latest_s is not None:
            self.latest_s = max(self.latest_s or taken.latest_s, taken.latest_s)


@dataclass(frozen=True)
class Plan:
    """What to do now: ``wait`` (why) or run over objects written in [since, until)."""

    run: bool
    why: str = ""
    since: datetime | None = None  # None: every object (no clean point known)
    until: datetime | None = None
    generation: int = 0
    # Events still on their way when the run was decided: in MinIO's queue (one MinIO
    # empties fast enough, or holds for good) or in Kafka, not yet indexed (the lag).
    in_flight: bool = False


def periodic_due(stored: JobRecord | None, now: datetime, interval_s: float) -> bool:
    """Whether the group's anti-entropy run is due: never ran, or its last one ended
    ``interval_s`` ago (0: never due). Pure."""
    if interval_s <= 0:
        return False
    if stored is None:
        return True
    ended = stored.finished_at or stored.updated_at
    return now - ended >= timedelta(seconds=interval_s)


def clean_point(stored: JobRecord | None, settle_s: float) -> datetime | None:
    """The cutoff of the group's last run, if it ended well: objects written before it
    were compared then (None: compare every object). Pure."""
    if stored is None or stored.status is not JobStatus.DONE or stored.started_at is None:
        return None
    return stored.started_at - timedelta(seconds=settle_s)


def plan(
    pending: Pending,
    stored: JobRecord | None,
    queue: NotifyQueue | None,
    lag: int | None,
    *,
    now: datetime,
    settings: Settings,
    rate: float | None = None,
    unchanged_s: float = 0.0,
) -> Plan:
    """Whether to run now, given the pending reasons, the group's last run (the lease
    row), MinIO's queue (its delivery ``rate``, events/s, and for how long its reading has
    not changed, ``unchanged_s``) and the indexer's lag. Pure."""
    whys = (
        "" if pending.reasons else "nothing to do",
        _lease_held(stored, now),
        _too_soon(stored, now, settings.reconcile_min_gap_s),
        _settling(pending, now, settings.reconcile_settle_s),
        _backlog(queue, rate, unchanged_s, settings.reconcile_settle_s),
        _lagging(lag, settings.reconcile_max_lag),
    )
    why = next((why for why in whys if why), "")
    if why:
        return Plan(False, why)
    return Plan(
        True,
        since=clean_point(stored, settings.reconcile_settle_s),
        until=now - timedelta(seconds=settings.reconcile_settle_s),
        generation=int(stored.sequencer, 16) + 1 if stored is not None else 1,
        in_flight=bool(queue is not None and queue.queue_length) or bool(lag),
    )


def follow_up(reasons: set[Reason], decided: Plan) -> bool:
    """Whether a run that ended well calls for one more (RECHECK). Pure.

    Events on their way at the run (``decided.in_flight``) may be older than its cutoff
    and arrive after its listing: a create whose object was deleted meanwhile, its delete
    dropped by MinIO, then brings back a row of an object the bucket no longer has. The
    next run finds it (a row whose object is gone is compared whatever its age). Only
    after a triggered run, and once: anti-entropy runs are followed by the next one
    anyway, and under steady traffic there is always something on its way."""
    return decided.in_flight and bool(reasons & {Reason.FAILED_EVENTS, Reason.MINIO_RESTART})


def still_while_reachable(unchanged_s: float, reachable_s: float | None) -> float:
    """How long MinIO's queue has stood still while Kafka could be reached (``reachable_s``:
    since when it could, None: it cannot, or not known yet). While Kafka is down nothing
    moves, and once it is back MinIO needs a moment (its retry loop, its metrics cached
    10 s) to show it sends again: a queue still only for that is no queue MinIO holds for
    good (``holds_unsent``). Pure."""
    return 0.0 if reachable_s is None else min(unchanged_s, reachable_s)


def _lease_held(stored: JobRecord | None, now: datetime) -> str:
    if stored is None or stored.status.finished:
        return ""
    expires = stored.lease_expires_at
    if expires is None or expires <= now:
        return ""  # its runner died: the run is taken over
    return f"another process runs one (lease until {expires.isoformat()})"


def _too_soon(stored: JobRecord | None, now: datetime, min_gap_s: float) -> str:
    if stored is None or stored.finished_at is None:
        return ""
    gap = now - stored.finished_at
    if gap >= timedelta(seconds=min_gap_s):
        return ""
    return f"the last run ended {gap.total_seconds():.0f} s ago"


def _settling(pending: Pending, now: datetime, settle_s: float) -> str:
    if pending.latest_s is None:
        return ""
    waited = now.timestamp() - pending.latest_s
    return "" if waited >= settle_s else f"settling ({waited:.0f} of {settle_s:g} s)"


def _backlog(
    queue: NotifyQueue | None, rate: float | None, unchanged_s: float, settle_s: float
) -> str:
    """Why MinIO's queue is too long to run now: its events could be older than the
    cutoff, and their objects would look missing. A queue MinIO empties within half the
    settling time is fine (under steady traffic it is rarely empty); without a rate,
    only an empty one. A queue that has not moved for the settling time is not waited
    for: MinIO holds entries it does not send (``holds_unsent``), and would hold them
    forever."""
    if queue is None or queue.queue_length == 0:
        return ""
    if holds_unsent(queue, unchanged_s, settle_s):
        return ""
    if rate and queue.queue_length / rate < settle_s / 2:
        return ""
    return f"MinIO's queue holds {queue.queue_length} events"


def _lagging(lag: int | None, max_lag: int) -> str:
    if lag is None:
        return "the indexer's lag is unknown"
    return f"the indexer lags {lag} events" if lag > max_lag else ""


def concerned(
    mismatches: Sequence[Mismatch], since: datetime | None, until: datetime
) -> list[Mismatch]:
    """The differences a run repairs: objects written in [since, until) (by the listing's
    time), objects written before ``until`` that the index holds as removed in [since,
    until) (the removal's time: a delete MinIO undid, however old the object), and index
    rows whose object is gone, of a write before ``until`` (its event's time; a newer row
    may be of a write the listing came too early to see). Pure."""
    return [m for m in mismatches if _in_window(m, since, until)]


def _in_window(mismatch: Mismatch, since: datetime | None, until: datetime) -> bool:
    if mismatch.kind is Difference.EXTRA:
        return mismatch.indexed is not None and mismatch.indexed.last_event_time < until
    listed = mismatch.listed
    if listed is None or listed.last_modified >= until:
        return False  # written too recently: left to its own event, still on its way
    moments = [listed.last_modified]
    if mismatch.removed is not None:
        moments.append(mismatch.removed.last_event_time)
    return any(since is None or since <= moment < until for moment in moments)


def lease_request(generation: int) -> JobRequest:
    """The lease row's job for ``generation`` (fixed width: sequencers compare as text)."""
    return JobRequest(
        bucket=LEASE_BUCKET,
        key=LEASE_KEY,
        version_id="",
        processor=LEASE_PROCESSOR,
        sequencer=f"{generation:016X}",
        etag=None,
        size=None,
    )


# --- I/O --------------------------------------------------------------------------------


LagReader = Callable[[], Awaitable[int]]


@dataclass
class AutoStats:
    runs: int = 0
    repaired: int = 0
    last_run_id: str | None = None
    last_reasons: list[str] = field(default_factory=list)
    waiting: str = ""
    # MinIO's queue holds events and has not moved for RECONCILE_SETTLE_S: entries it
    # does not send (see holds_unsent); runs no longer wait for them.
    minio_unsent: bool = False


class AutoReconcile:
    """The task: reads MinIO's queue every MINIO_METRICS_INTERVAL_S, collects reasons,
    and runs a reconcile with repair when ``plan`` says so. ``run`` until ``stop``."""

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        *,
        minio: Callable[[], Minio],
        buckets: Callable[[], dict[str, KeyFilter | None]],
        watch: QueueWatch | None,
        lag: LagReader,
        owner: str,
    ) -> None:
        self._settings = settings
        self._store = store
        self._minio = minio
        self._buckets = buckets
        self._watch = watch
        self._lag = lag
        self._lease = Lease(owner, settings.reconcile_lease_s)
        self._pending = Pending()
        self._previous: NotifyQueue | None = None
        self._readable = True
        # Since when (monotonic seconds) the indexer's lag, read from Kafka, has been
        # readable without a break; None while it is not (see still_while_reachable).
        self._kafka_since: float | None = None
        self._stop = asyncio.Event()
        self.stats = AutoStats()
        _zero_series()

    def stop(self) -> None:
        self._stop.set()

    def want(self, reason: Reason) -> None:
        """Ask for a run, as if ``reason`` had been seen now."""
        self._pending.add({reason}, time.time())

    @property
    def poll_s(self) -> float:
        return self._settings.minio_metrics_interval_s or IDLE_POLL_S

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.step()
            except ConsumerError as exc:  # an outage: the next round tries again
                log.warning("automatic reconcile: not this round", error=str(exc))
            except Exception:  # a bug must not end the task (nor the indexer with it)
                log.exception("automatic reconcile: unexpected failure")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_s)

    async def step(self) -> Plan:
        """One round: read, decide, maybe run. Raises ConsumerError."""
        queue = await self._read_queue()
        if not self._settings.reconcile_auto:
            return Plan(False, "RECONCILE_AUTO is off")
        now = datetime.now(UTC)
        stored = await self._stored()
        if periodic_due(stored, now, self._settings.reconcile_interval_s):
            self._pending.add({Reason.PERIODIC}, now.timestamp())
        lag = await self._lag_or_none() if self._pending.reasons else None
        watch = self._watch
        decided = plan(
            self._pending,
            stored,
            queue,
            lag,
            now=now,
            settings=self._settings,
            rate=watch.rate if watch is not None else None,
            unchanged_s=still_while_reachable(watch.unchanged_s, self._kafka_reachable_s())
            if watch is not None
            else 0.0,
        )
        if decided.run:
            await self._run(decided)
        elif self._pending.reasons and decided.why != self.stats.waiting:
            # Once per new reason to wait, not every round.
            log.info(
                "automatic reconcile waits", reasons=sorted(self._pending.reasons), why=decided.why
            )
        self.stats.waiting = "" if decided.run else decided.why
        return decided

    async def _read_queue(self) -> NotifyQueue | None:
        if self._watch is None:
            return None
        try:
            current = await self._watch.read()
        except ConsumerError as exc:
            if self._readable:  # once per outage, not every round
                log.warning("MinIO's queue unreadable", error=str(exc))
            self._readable = False
            return None
        previous = self._previous
        if current.started_at_s is None and previous is not None:
            # A reading without the start time (a server just up) keeps the known one:
            # the next reading that has it is compared with what was before.
            current = replace(current, started_at_s=previous.started_at_s)
        if previous is None:  # what later readings are compared with
            log.info(
                "watching MinIO's queue",
                target=current.target_id,
                minio_started_at_s=current.started_at_s,
                queue_length=current.queue_length,
                failed_events=current.failed_events,
            )
        elif not self._readable:
            log.info(
                "MinIO's queue readable again",
                minio_started_at_s=current.started_at_s,
                queue_length=current.queue_length,
            )
            self._readable = True
        reasons = triggers(previous, current)
        if reasons:
            log.info(
                "automatic reconcile wanted",
                reasons=sorted(reasons),
                failed_events=current.failed_events,
                minio_started_at_s=current.started_at_s,
            )
        self._pending.add(reasons, time.time())
        self._previous = current
        self._say_if_unsent(current, self._watch.unchanged_s)
        return current

    def _say_if_unsent(self, queue: NotifyQueue, unchanged_s: float) -> None:
        """Logs once (until the queue moves again) that MinIO holds entries it does not
        send: no delivery will ever empty them, so runs no longer wait for them."""
        unsent = holds_unsent(queue, unchanged_s, self._settings.reconcile_settle_s)
        if unsent and not self.stats.minio_unsent:
            log.warning(
                "MinIO holds events it does not send",
                queue_length=queue.queue_length,
                unchanged_s=round(unchanged_s, 1),
                hint="an entry of its queue_dir left empty or cut short by a crash is never"
                " sent nor removed; the automatic reconcile no longer waits for it",
            )
        self.stats.minio_unsent = unsent

    async def _lag_or_none(self) -> int | None:
        try:
            lag = await self._lag()
        except ConsumerError as exc:
            log.debug("indexer lag not read", error=str(exc))
            self._kafka_since = None
            return None
        if self._kafka_since is None:
            self._kafka_since = time.monotonic()
        return lag

    def _kafka_reachable_s(self) -> float | None:
        return None if self._kafka_since is None else time.monotonic() - self._kafka_since

    async def _stored(self) -> JobRecord | None:
        rows = await self._store.jobs(bucket=LEASE_BUCKET, key=LEASE_KEY, limit=1)
        return rows[0] if rows else None

    async def _run(self, decided: Plan) -> None:
        request = lease_request(decided.generation)
        claims = await self._store.claim_jobs([request], self._lease)
        if not claims.run:
            log.debug("automatic reconcile: another process took this run")
            return
        await self._store.start_job(request, self._lease.owner)
        taken = self._pending.take()
        reasons = sorted(str(reason) for reason in taken.reasons)
        started = time.perf_counter()
        renewing = asyncio.create_task(self._renew_forever())
        outcome = "done"
        try:
            report = await self._reconcile(decided)
        except BaseException as exc:
            # Ended as failed (also when the service stops): the next run compares every
            # object, and none waits for this lease.
            outcome = "failed"
            error = str(exc) or type(exc).__name__
            self._pending.put_back(taken)  # the next round tries again
            await asyncio.shield(self._finish(request, JobStatus.FAILED, started, error))
            log.warning("automatic reconcile failed", reasons=reasons, error=error)
            raise
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            for reason in reasons:
                instruments.reconcile_runs.add(1, {"reason": reason, "outcome": outcome})
        await self._finish(request, JobStatus.DONE, started, None)
        self._record(report, reasons, decided, time.perf_counter() - started)
        if follow_up(taken.reasons, decided):
            self._pending.add({Reason.RECHECK}, time.time())

    async def _reconcile(self, decided: Plan) -> ReconcileReport:
        assert decided.until is not None
        # No progress line (the default): the log line at the end tells the figures.
        reconciler = Reconciler(self._settings, self._store, self._minio())
        for bucket, covers in self._buckets().items():
            await reconciler.differences(bucket, covers)
        report = reconciler.report
        report.mismatches = concerned(report.mismatches, decided.since, decided.until)
        if report.mismatches:
            await reconciler.repair()
        return report

    async def _finish(
        self, request: JobRequest, status: JobStatus, started: float, error: str | None
    ) -> None:
        duration_ms = int((time.perf_counter() - started) * 1000)
        outcome = JobOutcome(status, duration_ms, error=error)
        await self._store.finish_job(request, outcome, self._lease.owner)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease.duration_s / 4)
            with contextlib.suppress(ConsumerError):
                await self._store.renew_leases(self._lease)

    def _record(
        self, report: ReconcileReport, reasons: list[str], decided: Plan, elapsed_s: float
    ) -> None:
        summary = report.summary()
        for mismatch in report.mismatches:
            instruments.reconcile_repairs.add(1, {"difference": mismatch.kind.value})
        self.stats.runs += 1
        self.stats.repaired += len(report.mismatches)
        self.stats.last_run_id = report.run_id
        self.stats.last_reasons = reasons
        log.info(
            "automatic reconcile",
            reasons=reasons,
            since=decided.since.isoformat() if decided.since else None,
            until=decided.until.isoformat() if decided.until else None,
            elapsed_s=round(elapsed_s, 3),
            **{k: v for k, v in summary.items() if k != "buckets"},
        )


def _zero_series() -> None:
    """Every series of the run counters at 0 from the start, so a rate or an increase over
    them is 0 rather than missing until the first run."""
    for reason in Reason:
        for outcome in ("done", "failed"):
            instruments.reconcile_runs.add(0, {"reason": reason.value, "outcome": outcome})
    for difference in Difference:
        instruments.reconcile_repairs.add(0, {"difference": difference.value})


def build_auto_reconcile(settings: Settings, store: IndexStore) -> AutoReconcile:
    """The task as ``run`` wires it: MinIO's queue read with the consumer's keys (unless
    MINIO_METRICS_INTERVAL_S=0), the buckets of the notification file, the indexer
    group's lag on the events topic."""

    async def indexer_lag() -> int:
        topic = settings.kafka_events_topic
        return sum((await group_lag(settings, settings.kafka_group_id, topic)).values())

    def buckets() -> dict[str, KeyFilter | None]:
        return watched(load_notify_config(settings.minio_notify_config, settings))

    watch = (
        QueueWatch(settings, lambda: notify_target_id(settings))
        if settings.minio_metrics_interval_s
        else None
    )
    return AutoReconcile(
        settings,
        store,
        minio=lambda: minio_client(settings),
        buckets=buckets,
        watch=watch,
        lag=indexer_lag,
        owner=new_owner_id(),
    )
