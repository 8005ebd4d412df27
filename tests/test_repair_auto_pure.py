"""The automatic reconcile's decisions (pure): what triggers it, when it waits, which
differences it repairs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from consumer.index import JobRecord, JobStatus, ObjectRecord
from consumer.minio.notify_queue import NotifyQueue
from consumer.repair.auto import (
    Pending,
    Reason,
    clean_point,
    concerned,
    follow_up,
    lease_request,
    periodic_due,
    plan,
    still_while_reachable,
    triggers,
)
from consumer.repair.compare import Difference, ListedObject, Mismatch
from consumer.settings import Settings

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    _env_file=None,  # type: ignore[call-arg]
    RECONCILE_SETTLE_S=30,
    RECONCILE_MIN_GAP_S=60,
    RECONCILE_MAX_LAG=100,
    RECONCILE_INTERVAL_S=3600,
)


def _queue(**fields: object) -> NotifyQueue:
    values: dict[str, object] = {
        "target_id": "VOXPERSONA",
        "queue_length": 0,
        "failed_events": 0,
        "total_events": 10,
        "started_at_s": 1000.0,
        "read_at_s": 0.0,
    }
    values.update(fields)
    return NotifyQueue(**values)  # type: ignore[arg-type]


def _stored(
    status: JobStatus = JobStatus.DONE,
    *,
    started: datetime = NOW - timedelta(hours=2),
    finished: datetime | None = NOW - timedelta(hours=2),
    lease_until: datetime | None = None,
    generation: int = 7,
) -> JobRecord:
    return JobRecord(
        bucket="~reconcile",
        key="auto",
        version_id="",
        processor="reconcile",
        sequencer=f"{generation:016X}",
        etag=None,
        status=status,
        attempts=1,
        last_error=None,
        result_bucket=None,
        result_key=None,
        created_at=started,
        started_at=started,
        finished_at=finished,
        duration_ms=5,
        updated_at=finished or started,
        lease_owner="host:1:abc",
        lease_expires_at=lease_until,
    )


def _pending(*reasons: Reason, since: datetime = NOW - timedelta(minutes=5)) -> Pending:
    pending = Pending()
    pending.add(set(reasons), since.timestamp())
    return pending


class TestTriggers:
    def test_failed_events_rising_calls_for_a_run(self) -> None:
        assert triggers(_queue(failed_events=2), _queue(failed_events=5)) == {Reason.FAILED_EVENTS}
        assert triggers(_queue(failed_events=5), _queue(failed_events=5)) == set()

    def test_a_moved_start_time_calls_for_a_run(self) -> None:
        restarted = _queue(started_at_s=2000.0, failed_events=0)
        assert triggers(_queue(failed_events=9), restarted) == {Reason.MINIO_RESTART}

    def test_the_first_reading_calls_for_nothing(self) -> None:
        assert triggers(None, _queue(failed_events=50)) == set()

    def test_pending_keeps_the_time_of_the_latest_trigger(self) -> None:
        # Drops that go on keep the run waiting: it must see them older than its cutoff.
        pending = Pending()
        pending.add({Reason.FAILED_EVENTS}, 10.0)
        pending.add({Reason.MINIO_RESTART}, 20.0)
        pending.add({Reason.PERIODIC}, 30.0)
        assert pending.latest_s == 20.0
        assert pending.reasons == {Reason.FAILED_EVENTS, Reason.MINIO_RESTART, Reason.PERIODIC}

    def test_a_failed_runs_reasons_are_pending_again(self) -> None:
        pending = Pending()
        pending.add({Reason.FAILED_EVENTS}, 10.0)
        taken = pending.take()
        assert (pending.reasons, pending.latest_s) == (set(), None)
        pending.add({Reason.PERIODIC}, 20.0)
        pending.put_back(taken)
        assert (pending.reasons, pending.latest_s) == (
            {Reason.FAILED_EVENTS, Reason.PERIODIC},
            10.0,
        )


class TestPlan:
    def test_runs_with_the_last_clean_point_and_a_settled_cutoff(self) -> None:
        decided = plan(_pending(Reason.FAILED_EVENTS), _stored(), _queue(), 0, now=NOW,
                       settings=SETTINGS)  # fmt: skip
        assert decided.run
        assert decided.since == NOW - timedelta(hours=2, seconds=30)
        assert decided.until == NOW - timedelta(seconds=30)
        assert decided.generation == 8

    def test_the_first_run_of_a_group_compares_every_object(self) -> None:
        decided = plan(_pending(Reason.PERIODIC), None, None, 0, now=NOW, settings=SETTINGS)
        assert decided.run
        assert decided.since is None
        assert decided.generation == 1

    def test_waits_while_another_process_holds_the_lease(self) -> None:
        running = _stored(JobStatus.RUNNING, finished=None, lease_until=NOW + timedelta(60))
        decided = plan(_pending(Reason.PERIODIC), running, None, 0, now=NOW, settings=SETTINGS)
        assert not decided.run
        assert "another process" in decided.why

    def test_takes_over_a_run_whose_lease_expired(self) -> None:
        dead = _stored(JobStatus.RUNNING, finished=None, lease_until=NOW - timedelta(seconds=1))
        decided = plan(_pending(Reason.PERIODIC), dead, None, 0, now=NOW, settings=SETTINGS)
        assert decided.run
        assert decided.since is None  # the last run did not end well

    def test_throttled_after_a_recent_run(self) -> None:
        recent = _stored(finished=NOW - timedelta(seconds=20))
        decided = plan(_pending(Reason.MINIO_RESTART), recent, None, 0, now=NOW,
                       settings=SETTINGS)  # fmt: skip
        assert (decided.run, decided.why) == (False, "the last run ended 20 s ago")

    def test_a_trigger_settles_first(self) -> None:
        fresh = _pending(Reason.FAILED_EVENTS, since=NOW - timedelta(seconds=10))
        decided = plan(fresh, _stored(), _queue(), 0, now=NOW, settings=SETTINGS)
        assert (decided.run, decided.why) == (False, "settling (10 of 30 s)")

    def test_waits_for_minios_queue_and_the_indexer(self) -> None:
        pending = _pending(Reason.FAILED_EVENTS)
        busy = plan(pending, _stored(), _queue(queue_length=12), 0, now=NOW, settings=SETTINGS)
        assert busy.why == "MinIO's queue holds 12 events"
        lagging = plan(pending, _stored(), _queue(), 101, now=NOW, settings=SETTINGS)
        assert lagging.why == "the indexer lags 101 events"
        unknown = plan(pending, _stored(), _queue(), None, now=NOW, settings=SETTINGS)
        assert unknown.why == "the indexer's lag is unknown"

    def test_a_queue_minio_empties_within_half_the_settling_time_does_not_block(self) -> None:
        pending, queue = _pending(Reason.FAILED_EVENTS), _queue(queue_length=140)
        steady = plan(pending, _stored(), queue, 0, now=NOW, settings=SETTINGS, rate=10.0)
        assert steady.run  # 14 s of sending, under 15
        behind = plan(pending, _stored(), queue, 0, now=NOW, settings=SETTINGS, rate=9.0)
        assert behind.why == "MinIO's queue holds 140 events"

    def test_a_queue_that_has_not_moved_for_the_settling_time_is_not_waited_for(self) -> None:
        # An entry MinIO never sends (an empty queue file left by a kill): no delivery.
        pending, stuck = _pending(Reason.MINIO_RESTART), _queue(queue_length=1)
        waits = plan(pending, _stored(), stuck, 0, now=NOW, settings=SETTINGS, unchanged_s=29.0)
        assert waits.why == "MinIO's queue holds 1 events"
        runs = plan(pending, _stored(), stuck, 0, now=NOW, settings=SETTINGS, unchanged_s=30.0)
        assert runs.run, runs.why
        never = plan(pending, _stored(), stuck, 0, now=NOW, settings=SETTINGS, rate=0.0)
        assert never.why == "MinIO's queue holds 1 events"

    def test_nothing_pending_nothing_to_do(self) -> None:
        assert not plan(Pending(), None, None, 0, now=NOW, settings=SETTINGS).run

    def test_a_queue_still_only_while_kafka_was_down_is_waited_for(self) -> None:
        # Kafka stopped: MinIO kept its full queue (nothing moved for minutes); Kafka back
        # 5 s ago: MinIO is about to send it, and has not shown it yet.
        assert still_while_reachable(300.0, None) == 0.0
        assert still_while_reachable(300.0, 5.0) == 5.0
        assert still_while_reachable(12.0, 600.0) == 12.0
        pending, full = _pending(Reason.FAILED_EVENTS), _queue(queue_length=20)
        unchanged_s = still_while_reachable(300.0, 5.0)
        back = plan(
            pending, _stored(), full, 0, now=NOW, settings=SETTINGS, unchanged_s=unchanged_s
        )
        assert back.why == "MinIO's queue holds 20 events"

    def test_a_run_says_whether_events_were_still_on_their_way(self) -> None:
        pending = _pending(Reason.FAILED_EVENTS)
        quiet = plan(pending, _stored(), _queue(), 0, now=NOW, settings=SETTINGS)
        assert (quiet.run, quiet.in_flight) == (True, False)
        queued = plan(pending, _stored(), _queue(queue_length=140), 0, now=NOW, settings=SETTINGS,
                      rate=10.0)  # fmt: skip
        assert (queued.run, queued.in_flight) == (True, True)
        lagging = plan(pending, _stored(), _queue(), 3, now=NOW, settings=SETTINGS)
        assert (lagging.run, lagging.in_flight) == (True, True)


class TestFollowUp:
    def test_a_triggered_run_with_events_on_their_way_is_checked_once_more(self) -> None:
        in_flight = plan(_pending(Reason.FAILED_EVENTS), _stored(), _queue(), 3, now=NOW,
                         settings=SETTINGS)  # fmt: skip
        assert follow_up({Reason.FAILED_EVENTS}, in_flight)
        assert follow_up({Reason.MINIO_RESTART, Reason.PERIODIC}, in_flight)
        # Once: the recheck itself is not followed; nor is anti-entropy.
        assert not follow_up({Reason.RECHECK}, in_flight)
        assert not follow_up({Reason.PERIODIC}, in_flight)

    def test_nothing_on_its_way_nothing_to_check_again(self) -> None:
        quiet = plan(_pending(Reason.FAILED_EVENTS), _stored(), _queue(), 0, now=NOW,
                     settings=SETTINGS)  # fmt: skip
        assert not follow_up({Reason.FAILED_EVENTS}, quiet)

    def test_a_recheck_waits_the_settling_time_like_any_trigger(self) -> None:
        pending = Pending()
        pending.add({Reason.RECHECK}, (NOW - timedelta(seconds=10)).timestamp())
        decided = plan(pending, _stored(), _queue(), 0, now=NOW, settings=SETTINGS)
        assert decided.why == "settling (10 of 30 s)"


class TestPeriodic:
    def test_due_when_never_run_or_an_interval_after_the_last(self) -> None:
        assert periodic_due(None, NOW, 3600)
        assert periodic_due(_stored(finished=NOW - timedelta(seconds=3600)), NOW, 3600)
        assert not periodic_due(_stored(finished=NOW - timedelta(seconds=3599)), NOW, 3600)

    def test_interval_zero_turns_it_off(self) -> None:
        assert not periodic_due(None, NOW, 0)

    def test_only_a_run_that_ended_well_is_a_clean_point(self) -> None:
        assert clean_point(_stored(JobStatus.FAILED), 30) is None
        assert clean_point(None, 30) is None
        assert clean_point(_stored(started=NOW), 30) == NOW - timedelta(seconds=30)


def _listed(key: str, modified: datetime) -> ListedObject:
    return ListedObject("b", key, "", 1, "e", modified)


def _row(key: str, indexed_at: datetime) -> ObjectRecord:
    return ObjectRecord(
        bucket="b",
        key=key,
        version_id="",
        size=1,
        etag="e",
        content_type=None,
        user_id=None,
        metadata={},
        first_event_time=indexed_at,
        last_event_time=indexed_at,
        sequencer="1",
        indexed_at=indexed_at,
        deleted=False,
    )


class TestConcerned:
    def test_only_objects_written_between_the_clean_point_and_the_cutoff(self) -> None:
        since, until = NOW - timedelta(hours=1), NOW - timedelta(seconds=30)
        old = Mismatch(
            Difference.MISSING, "b", "old", "", _listed("old", since - timedelta(1)), None
        )
        inside = Mismatch(Difference.MISSING, "b", "in", "", _listed("in", since), None)
        stale = Mismatch(
            Difference.STALE, "b", "st", "", _listed("st", until - timedelta(seconds=1)),
            _row("st", since),
        )  # fmt: skip
        recent = Mismatch(Difference.MISSING, "b", "new", "", _listed("new", until), None)
        assert concerned([old, inside, stale, recent], since, until) == [inside, stale]
        assert concerned([old, recent], None, until) == [old]

    def test_rows_whose_object_is_gone_unless_written_after_the_cutoff(self) -> None:
        until = NOW - timedelta(seconds=30)
        gone = Mismatch(Difference.EXTRA, "b", "g", "", None, _row("g", NOW - timedelta(days=3)))
        fresh = Mismatch(Difference.EXTRA, "b", "f", "", None, _row("f", NOW))
        # Indexed just now (its event came late), written before the cutoff: repaired.
        late = replace(_row("l", until - timedelta(seconds=1)), indexed_at=NOW)
        late_gone = Mismatch(Difference.EXTRA, "b", "l", "", None, late)
        since = NOW - timedelta(hours=1)
        assert concerned([gone, fresh, late_gone], since, until) == [gone, late_gone]

    def test_objects_whose_removal_the_index_holds_in_the_window_however_old(self) -> None:
        since, until = NOW - timedelta(hours=1), NOW - timedelta(seconds=30)
        written = since - timedelta(days=2)  # long before the clean point

        def undone(key: str, removed_at: datetime, modified: datetime = written) -> Mismatch:
            tombstone = replace(_row(key, removed_at), deleted=True)
            return Mismatch(
                Difference.MISSING, "b", key, "", _listed(key, modified), None, removed=tombstone
            )

        inside = undone("in", since + timedelta(minutes=1))
        before = undone("before", since - timedelta(seconds=1))
        after = undone("after", until)
        # Written after the cutoff: its own event is still on its way.
        rewritten = undone("rewritten", since + timedelta(minutes=1), modified=until)
        assert concerned([inside, before, after, rewritten], since, until) == [inside]
        assert concerned([before, after], None, until) == [before, after]


def test_lease_generations_compare_as_text_in_order() -> None:
    assert lease_request(9).sequencer < lease_request(10).sequencer < lease_request(256).sequencer
    assert lease_request(1).bucket == "~reconcile"
