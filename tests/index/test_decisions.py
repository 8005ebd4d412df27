"""The index's pure rules, without a database: decide, is_newer, ordering, planning a
batch's rows in memory, LIKE escaping."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from consumer.errors import InvalidInput
from consumer.events import (
    RECONCILE_FOUND,
    RECONCILE_GONE,
    EventKind,
    removes_object,
    writes_content,
)
from consumer.index.decisions import (
    Action,
    StoredState,
    affects_objects,
    apply_action,
    decide,
    first_of_each_identity,
    is_newer,
    order_for_apply,
    plan_objects,
    sweeps_other_versions,
)
from consumer.index.records import ObjectQuery, Versions, check_limit, lower_names
from consumer.index.sql import Conditions, Dialect, dollar, escape_like, listing_query, qmark
from tests.index.factories import T0, event

SEQ = 10  # the event's sequencer in the table below
EVENT_TIME = T0 + timedelta(seconds=SEQ)

# name -> stored row state relative to an event with sequencer SEQ at EVENT_TIME
STATES: dict[str, StoredState | None] = {
    "no_row": None,
    "older_live": StoredState(f"{5:032X}", T0 + timedelta(seconds=5), deleted=False),
    "equal_live": StoredState(f"{SEQ:032X}", EVENT_TIME, deleted=False),
    "newer_live": StoredState(f"{20:032X}", T0 + timedelta(seconds=20), deleted=False),
    "older_tombstone": StoredState(f"{5:032X}", T0 + timedelta(seconds=5), deleted=True),
    "equal_tombstone": StoredState(f"{SEQ:032X}", EVENT_TIME, deleted=True),
    "newer_tombstone": StoredState(f"{20:032X}", T0 + timedelta(seconds=20), deleted=True),
}

_C, _M, _R = EventKind.CREATED, EventKind.METADATA_CHANGED, EventKind.REMOVED
EXPECTED: dict[EventKind, dict[str, Action]] = {
    _C: {
        "no_row": Action.INSERT,
        "older_live": Action.OVERWRITE,
        "equal_live": Action.STALE,
        "newer_live": Action.STALE,
        "older_tombstone": Action.OVERWRITE,
        "equal_tombstone": Action.STALE,
        "newer_tombstone": Action.STALE,
    },
    _M: {
        "no_row": Action.INSERT,
        "older_live": Action.TOUCH,
        "equal_live": Action.STALE,
        "newer_live": Action.STALE,
        "older_tombstone": Action.TOUCH,
        "equal_tombstone": Action.STALE,
        "newer_tombstone": Action.STALE,
    },
    _R: {
        "no_row": Action.INSERT_TOMBSTONE,
        "older_live": Action.TOMBSTONE,
        "equal_live": Action.STALE,
        "newer_live": Action.STALE,
        "older_tombstone": Action.TOMBSTONE,
        "equal_tombstone": Action.STALE,
        "newer_tombstone": Action.STALE,
    },
}
EXPECTED[EventKind.EXPIRED] = EXPECTED[_R]
# A NoOP (a DELETE that found nothing) leaves rows alone, except a live row older than
# it: MinIO said the key held nothing then (a degraded distributed MinIO was seen to send
# one for a delete that did remove the object).
EXPECTED[EventKind.NOOP] = dict.fromkeys(STATES, Action.JOURNAL_ONLY) | {
    "older_live": Action.TOMBSTONE
}
EXPECTED[EventKind.OTHER] = dict.fromkeys(STATES, Action.JOURNAL_ONLY)
# A reconcile repair that found the object stands for its lost write (RECONCILE_FOUND,
# the factory's default name); one that found it gone, for its lost removal.
EXPECTED[EventKind.RECONCILED] = EXPECTED[_C]

CASES = [(kind, state) for kind in EventKind for state in STATES]


class TestDecide:
    @pytest.mark.parametrize(("kind", "state"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
    def test_every_kind_against_every_row_state(self, kind: EventKind, state: str) -> None:
        assert decide(STATES[state], event(kind, seq=SEQ)) is EXPECTED[kind][state]

    @pytest.mark.parametrize("state", STATES)
    def test_reconciled_gone_decides_like_a_removal(self, state: str) -> None:
        gone = event(EventKind.RECONCILED, seq=SEQ, event_name=RECONCILE_GONE)
        assert decide(STATES[state], gone) is EXPECTED[_R][state]

    @pytest.mark.parametrize(("kind", "state"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
    def test_an_event_and_its_facts_decide_alike(self, kind: EventKind, state: str) -> None:
        one = event(kind, seq=SEQ)
        assert decide(STATES[state], one.facts()) is decide(STATES[state], one)

    @pytest.mark.parametrize(
        "name", ["s3:ObjectCreated:Put", RECONCILE_FOUND, RECONCILE_GONE, "s3:Other"]
    )
    @pytest.mark.parametrize("kind", list(EventKind))
    def test_affects_objects_is_the_model_rules_in_one_lookup(
        self, kind: EventKind, name: str
    ) -> None:
        one = event(kind, seq=SEQ, event_name=name)
        by_rules = (
            kind in (EventKind.METADATA_CHANGED, EventKind.NOOP)
            or writes_content(one)
            or removes_object(one)
        )
        assert affects_objects(one) is by_rules
        assert affects_objects(one.facts()) is by_rules

    def test_only_journal_only_and_stale_leave_objects_alone(self) -> None:
        unchanged = {a for a in Action if not a.changes_objects}
        assert unchanged == {Action.JOURNAL_ONLY, Action.STALE}

    def test_equal_sequencer_later_time_is_newer(self) -> None:
        # MinIO can stamp a tagging change with the sequencer of the write it tags.
        stored = STATES["equal_live"]
        later = event(EventKind.METADATA_CHANGED, seq=SEQ, at=EVENT_TIME + timedelta(seconds=1))
        assert decide(stored, later) is Action.TOUCH

    def test_equal_sequencer_earlier_time_is_stale(self) -> None:
        earlier = event(EventKind.CREATED, seq=SEQ, at=EVENT_TIME - timedelta(seconds=1))
        assert decide(STATES["equal_live"], earlier) is Action.STALE

    def test_sequencer_beats_event_time(self) -> None:
        # A higher sequencer wins even with an earlier clock reading (clock skew).
        skewed = event(EventKind.CREATED, seq=30, at=T0)
        assert decide(STATES["newer_live"], skewed) is Action.OVERWRITE

    def test_sequencers_compare_as_numbers_not_as_short_strings(self) -> None:
        stored = StoredState(f"{0xF:032X}", T0, deleted=False)
        assert decide(stored, event(seq=0x10, at=T0)) is Action.OVERWRITE

    def test_missing_sequencer_is_older_than_any(self) -> None:
        stored = StoredState(f"{1:032X}", T0, deleted=False)
        no_seq = event(seq=-1, at=T0 + timedelta(days=1))
        assert no_seq.sequencer == ""
        assert decide(stored, no_seq) is Action.STALE

    def test_missing_sequencers_fall_back_to_event_time(self) -> None:
        stored = StoredState("", T0, deleted=False)
        assert decide(stored, event(seq=-1, at=T0 + timedelta(seconds=1))) is Action.OVERWRITE
        assert decide(stored, event(seq=-1, at=T0)) is Action.STALE


class TestIsNewer:
    def test_redelivery_is_not_newer_than_itself(self) -> None:
        e = event(seq=SEQ)
        assert not is_newer(e, StoredState(e.sequencer, e.event_time, deleted=False))


class TestSweep:
    def test_only_delete_all_versions_sweeps(self) -> None:
        names = {
            "s3:ObjectRemoved:DeleteAllVersions": True,
            "s3:ObjectRemoved:DeleteMarkerCreated": False,
            "s3:ObjectRemoved:Delete": False,
        }
        for name, sweeps in names.items():
            assert sweeps_other_versions(event(_R, seq=1, event_name=name)) is sweeps

    def test_a_create_never_sweeps(self) -> None:
        create = event(_C, seq=1, event_name="s3:ObjectRemoved:DeleteAllVersions")
        assert not sweeps_other_versions(create)


class TestOrderForApply:
    def test_groups_by_key_and_sorts_by_sequencer(self) -> None:
        events = [
            event(seq=3, key="b"),
            event(seq=2, key="a"),
            event(seq=1, key="b"),
            event(seq=5, key="a"),
        ]
        ordered = [(e.key, int(e.sequencer, 16)) for e in order_for_apply(events)]
        assert ordered == [("a", 2), ("a", 5), ("b", 1), ("b", 3)]

    def test_is_independent_of_arrival_order(self) -> None:
        events = [event(kind, seq=seq) for seq, kind in enumerate(EventKind, start=1)]
        shuffled = events[:]
        random.Random(7).shuffle(shuffled)
        assert order_for_apply(shuffled) == order_for_apply(events) == events

    def test_is_stable_for_equal_events(self) -> None:
        first = event(_C, seq=1, etag="first")
        second = event(_C, seq=1, etag="second")
        assert [e.etag for e in order_for_apply([first, second])] == ["first", "second"]
        assert [e.etag for e in order_for_apply([second, first])] == ["second", "first"]


NOW = T0 + timedelta(days=1)
C, M, R = EventKind.CREATED, EventKind.METADATA_CHANGED, EventKind.REMOVED


class TestPlanObjects:
    def test_events_on_one_row_collapse_into_its_final_state(self) -> None:
        create = event(C, seq=1, metadata={"lang": "ru"})
        tag = event(M, seq=2, event_name="s3:ObjectCreated:PutTagging", user_id=None)
        plan = plan_objects([], [create, tag], NOW)
        assert plan.objects_changed == 2
        (row,) = plan.changed.values()
        assert (row.size, row.etag, row.metadata) == (100, "etag-1", {"lang": "ru"})
        assert (row.user_id, row.last_event_name) == ("1", "s3:ObjectCreated:PutTagging")
        assert (row.first_event_time, row.last_event_time) == (create.event_time, tag.event_time)
        assert row.indexed_at == NOW

    def test_each_event_is_decided_against_the_row_the_ones_before_it_left(self) -> None:
        stored = apply_action(None, Action.INSERT, event(C, seq=5), NOW)
        older, removal, revive = event(C, seq=3), event(R, seq=6), event(C, seq=7)
        plan = plan_objects([stored], [older, removal, revive], NOW)
        assert (plan.stale_ignored, plan.objects_changed) == (1, 2)
        (row,) = plan.changed.values()
        assert not row.deleted
        assert row.etag == "etag-7"

    def test_unchanged_rows_are_not_written(self) -> None:
        stored = apply_action(None, Action.INSERT, event(C, seq=5), NOW)
        plan = plan_objects([stored], [event(C, seq=5)], NOW)
        assert (plan.changed, plan.stale_ignored) == ({}, 1)

    def test_delete_all_versions_sweeps_older_live_versions_in_memory(self) -> None:
        v1 = apply_action(None, Action.INSERT, event(C, seq=1, version_id="v1"), NOW)
        v3 = event(C, seq=3, version_id="v3")  # newer than the sweep: kept
        sweep = event(R, seq=2, version_id="v2", event_name="s3:ObjectRemoved:DeleteAllVersions")
        plan = plan_objects([v1], order_for_apply([v3, sweep]), NOW)
        deleted = {version for (_, _, version), row in plan.changed.items() if row.deleted}
        assert deleted == {"v1", "v2"}
        assert plan.objects_changed == 3

    def test_repeated_identities_in_one_batch_count_as_duplicates(self) -> None:
        first, other = event(C, seq=1), event(C, seq=2)
        unique, repeated = first_of_each_identity([(first, None), (other, None), (first, None)])
        assert [e for e, _ in unique] == [first, other]
        assert repeated == 1


class TestQueryHelpers:
    @pytest.mark.parametrize(
        ("prefix", "pattern"),
        [
            ("user_1/", "user\\_1/%"),
            ("100%", "100\\%%"),
            ("a\\b", "a\\\\b%"),
            ("plain", "plain%"),
        ],
    )
    def test_escape_like(self, prefix: str, pattern: str) -> None:
        assert escape_like(prefix) == pattern

    def test_lower_names(self) -> None:
        assert lower_names({"Session-Type": "Interview"}) == {"session-type": "Interview"}
        assert lower_names(None) == {}

    @pytest.mark.parametrize("limit", [0, -1])
    def test_check_limit_refuses_non_positive(self, limit: int) -> None:
        with pytest.raises(InvalidInput):
            check_limit(limit)

    def test_object_query_is_checked_once_when_built(self) -> None:
        query = ObjectQuery(metadata={"Session-Type": "Interview"}, limit=1)
        assert query.metadata == {"session-type": "Interview"}
        assert ObjectQuery(metadata={}).metadata is None
        with pytest.raises(InvalidInput, match="limit"):
            ObjectQuery(limit=0)
        with pytest.raises(InvalidInput, match="text search"):
            ObjectQuery(text="budget")
        assert ObjectQuery(text="budget", versions=Versions.CURRENT).text == "budget"

    def test_rows_listing_numbers_the_limit_after_the_filters(self) -> None:
        dialect = Dialect(
            placeholder=dollar,
            is_deleted="deleted",
            is_live="NOT deleted",
            add_metadata=lambda where, metadata: None,
            moment=lambda moment: moment,
            text_hits="",
            text_query=lambda text: text,
        )
        sql, params = listing_query(ObjectQuery(bucket="b", prefix="p_", limit=7), dialect)
        assert "WHERE NOT deleted AND bucket = $1 AND key LIKE $2" in sql
        assert sql.endswith("LIMIT $3")
        assert params == ["b", "p\\_%", 7]

    def test_conditions_number_placeholders(self) -> None:
        where = Conditions(dollar)
        where.add("NOT deleted")
        where.add("bucket = {}", "b")
        where.add("(a, b) > ({}, {})", 1, 2)
        assert where.where == " WHERE NOT deleted AND bucket = $1 AND (a, b) > ($2, $3)"
        assert where.params == ["b", 1, 2]
        assert where.next_placeholder() == "$4"

    def test_conditions_qmark(self) -> None:
        where = Conditions(qmark)
        assert where.where == ""
        where.add("key = {}", "k")
        assert (where.where, where.next_placeholder()) == (" WHERE key = ?", "?")
