"""reconcile's pure parts: the comparison, the repairs' events, and how they meet real
events in the index's decisions (a newer real event always wins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumer.errors import InvalidInput
from consumer.events import RECONCILE_FOUND, RECONCILE_GONE, EventKind, parse_message
from consumer.index import Action, ObjectRecord
from consumer.index.decisions import plan_objects
from consumer.index.records import ObjectRow
from consumer.repair.compare import (
    Difference,
    HeadState,
    ListedObject,
    after_sequencer,
    compare,
    found_event,
    found_moment,
    found_sequencer,
    gone_event,
    minio_message,
    sequencer_at,
    watched,
)
from consumer.repair.reconcile import NoProgress, Progress
from consumer.repair.replay import parse_since, replay_group
from consumer.setup.notify_config import NotifyConfig
from tests.index.factories import event

WRITTEN = datetime(2026, 5, 4, 12, 0, 0, 123000, tzinfo=UTC)
# MinIO's sequencer of that write: the same moment, to the nanosecond.
REAL_NS = int(WRITTEN.timestamp()) * 10**9 + 123_456_789


def listed(key: str, size: int = 10, etag: str = "e1", at: datetime = WRITTEN) -> ListedObject:
    return ListedObject("bkt", key, "", size, etag, at)


def row(key: str, size: int = 10, etag: str = "e1", *, deleted: bool = False, seq: int = 5):
    return ObjectRecord(
        bucket="bkt", key=key, version_id="", size=size, etag=etag, content_type="audio/ogg",
        user_id=None, metadata={}, first_event_time=WRITTEN, last_event_time=WRITTEN,
        sequencer=f"{seq:032X}", indexed_at=WRITTEN, deleted=deleted,
    )  # fmt: skip


def as_planned(record: ObjectRecord) -> ObjectRow:
    """``record`` as the batch's row, what plan_objects takes."""
    return ObjectRow(*(getattr(record, name) for name in ObjectRow._fields))


def head(etag: str = "e1", size: int = 10, at: datetime = WRITTEN) -> HeadState:
    return HeadState(
        version_id="",
        size=size,
        etag=etag,
        content_type="audio/ogg",
        metadata={"Content-Type": "audio/ogg", "X-Amz-Meta-User-Id": "7", "ETag": f'"{etag}"'},
        last_modified=at.replace(microsecond=0),
    )


class TestCompare:
    def test_missing_stale_extra_and_equal(self) -> None:
        found = compare(
            [listed("a"), listed("b", size=11), listed("c", etag='"e1"'), listed("d")],
            [row("b"), row("c"), row("d", etag="e2"), row("e"), row("f", deleted=True)],
        )
        assert [(m.kind, m.key) for m in found] == [
            (Difference.MISSING, "a"),
            (Difference.STALE, "b"),
            (Difference.STALE, "d"),
            (Difference.EXTRA, "e"),
        ]
        assert found[1].fields() == {
            "kind": "stale", "bucket": "bkt", "key": "b", "version_id": "",
            "bucket_size": 11, "bucket_etag": "e1", "index_size": 10, "index_etag": "e1",
        }  # fmt: skip

    def test_a_listed_object_the_index_holds_as_removed_is_missing_with_its_tombstone(
        self,
    ) -> None:
        tombstone = row("a", deleted=True)
        (found,) = compare([listed("a")], [tombstone, row("b", deleted=True)])
        assert (found.kind, found.key, found.indexed, found.removed) == (
            Difference.MISSING, "a", None, tombstone)  # fmt: skip
        assert found.fields()["index_removed_at"] == WRITTEN.isoformat()
        (plain,) = compare([listed("c")], [])
        assert plain.removed is None
        assert "index_removed_at" not in plain.fields()

    def test_versions_are_compared_one_by_one(self) -> None:
        v1 = ListedObject("bkt", "k", "v1", 1, "x", WRITTEN)
        indexed = ObjectRecord(**{**row("k").__dict__, "version_id": "v2"})
        kinds = [(m.kind, m.version_id) for m in compare([v1], [indexed])]
        assert kinds == [(Difference.MISSING, "v1"), (Difference.EXTRA, "v2")]

    def test_watched_keys_follow_the_notification_rules(self) -> None:
        config = NotifyConfig.model_validate(
            {
                "target": {"id": "T", "arn": "arn:minio:sqs::T:kafka"},
                "buckets": [
                    {"bucket": "results", "rules": [
                        {"id": "r", "events": ["s3:ObjectCreated:*"], "suffix": ".json"}]},
                    {"bucket": "audio", "rules": [
                        {"id": "a", "events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]},
                ],
            }
        )  # fmt: skip
        buckets = watched(config)
        assert list(buckets) == ["results", "audio"]
        results = buckets["results"]
        assert results is not None
        assert results("x/y.json")
        assert not results("x/y.txt")
        assert watched(config, "elsewhere") == {"elsewhere": None}


class TestRepairEvents:
    def test_sequencer_is_nanoseconds_in_hex(self) -> None:
        assert int(sequencer_at(WRITTEN), 16) == int(WRITTEN.timestamp()) * 10**9 + 123_000_000
        assert int(after_sequencer(f"{41:X}"), 16) == 42

    def test_found_uses_the_listing_time_for_the_same_content(self) -> None:
        assert found_moment(head(), listed("a")) == WRITTEN
        assert found_moment(head(etag="other"), listed("a")) == WRITTEN.replace(microsecond=0)
        assert found_moment(head(), None) == WRITTEN.replace(microsecond=0)

    def test_found_event_carries_the_head(self) -> None:
        found = found_event("bkt", "a", head(), WRITTEN, "run1")
        assert (found.kind, found.event_name, found.size, found.etag) == (
            EventKind.RECONCILED, RECONCILE_FOUND, 10, "e1")  # fmt: skip
        assert found.user_metadata == {"user-id": "7"}
        assert found.user_id == "7"
        assert found.user_agent == "voxpersona-reconcile/run1"

    def test_gone_event_is_newer_than_the_row(self) -> None:
        stamp = WRITTEN + timedelta(minutes=1)
        assert gone_event(row("e"), stamp, "r").sequencer == sequencer_at(stamp)
        future = row("e", seq=int(sequencer_at(stamp), 16) + 10)
        assert int(gone_event(future, stamp, "r").sequencer, 16) == int(future.sequencer, 16) + 1
        assert gone_event(row("e"), stamp, "r").event_name == RECONCILE_GONE

    def test_found_is_stamped_with_its_content_unless_the_index_removed_it_later(
        self,
    ) -> None:
        stamp = WRITTEN + timedelta(minutes=1)
        assert found_sequencer(WRITTEN, None, stamp) == sequencer_at(WRITTEN)
        older_removal = row("a", deleted=True, seq=int(sequencer_at(WRITTEN), 16) - 1)
        assert found_sequencer(WRITTEN, older_removal, stamp) == sequencer_at(WRITTEN)

    def test_found_after_a_removal_as_new_as_it_wins_over_the_removal(self) -> None:
        # A delete acknowledged after the write, then undone by MinIO: the HEAD (after
        # the removal) found the object, stamped before the HEAD.
        stamp = WRITTEN + timedelta(minutes=1)
        removal = row("a", deleted=True, seq=REAL_NS + 10**9)
        assert found_sequencer(WRITTEN, removal, stamp) == sequencer_at(stamp)
        same = row("a", deleted=True, seq=int(sequencer_at(WRITTEN), 16))
        assert found_sequencer(WRITTEN, same, stamp) == sequencer_at(stamp)
        # MinIO's clock ahead of this host's: one past the removal.
        ahead = row("a", deleted=True, seq=int(sequencer_at(stamp), 16) + 10)
        assert int(found_sequencer(WRITTEN, ahead, stamp), 16) == int(ahead.sequencer, 16) + 1
        repair = found_event(
            "bkt", "a", head(), WRITTEN, "r", sequencer=found_sequencer(WRITTEN, removal, stamp)
        )
        assert (repair.sequencer, repair.event_time) == (sequencer_at(stamp), WRITTEN)

    def test_published_message_parses_back_to_the_event(self) -> None:
        found = found_event("bkt", "user_7/a b+c%/ü.ogg", head(), WRITTEN, "run1")
        assert parse_message(minio_message(found)) == [found]


class TestRepairsAgainstRealEvents:
    """The repairs meet MinIO's events in ``decide``, in either order."""

    def _final(self, *events):  # type: ignore[no-untyped-def]
        plan = plan_objects([], list(events), WRITTEN)
        return plan.changed[("bkt", "user_1/a.ogg", "")]

    def test_the_lost_write_arriving_late_does_not_undo_the_repair(self) -> None:
        repair = found_event("bkt", "user_1/a.ogg", head(), WRITTEN, "r")
        real = event(seq=REAL_NS, at=WRITTEN, etag="e1", size=10)
        assert self._final(repair, real).etag == "e1"  # same content either way
        assert self._final(real, repair).sequencer == real.sequencer  # repair is stale

    def test_a_later_overwrite_wins_in_any_order(self) -> None:
        repair = found_event("bkt", "user_1/a.ogg", head(), WRITTEN, "r")
        later = event(seq=REAL_NS + 10**6, etag="new", size=99, at=WRITTEN + timedelta(seconds=1))
        for order in ((repair, later), (later, repair)):
            assert self._final(*order).etag == "new"

    def test_a_create_after_the_tombstone_stamp_wins(self) -> None:
        stamp = WRITTEN + timedelta(seconds=5)
        created = event(seq=REAL_NS + 6 * 10**9, at=stamp + timedelta(seconds=1))
        stored = row("user_1/a.ogg", seq=REAL_NS)
        gone = gone_event(stored, stamp, "r")
        plan = plan_objects([as_planned(stored)], [gone, created], WRITTEN)
        assert not plan.changed[("bkt", "user_1/a.ogg", "")].deleted
        plan = plan_objects([as_planned(stored)], [created, gone], WRITTEN)
        assert not plan.changed[("bkt", "user_1/a.ogg", "")].deleted
        assert plan.stale_ignored == 1

    def test_a_repair_over_an_undone_delete_revives_the_tombstone(self) -> None:
        removal = event(EventKind.REMOVED, seq=REAL_NS + 10**9, at=WRITTEN + timedelta(seconds=1))
        stamp = WRITTEN + timedelta(minutes=1)
        tombstone = plan_objects([], [removal], WRITTEN).changed[("bkt", "user_1/a.ogg", "")]
        assert tombstone.deleted
        sequencer = found_sequencer(WRITTEN, ObjectRecord(**tombstone._asdict()), stamp)
        repair = found_event("bkt", "user_1/a.ogg", head(), WRITTEN, "r", sequencer=sequencer)
        revived = plan_objects([tombstone], [repair], stamp).changed[("bkt", "user_1/a.ogg", "")]
        assert (revived.deleted, revived.etag) == (False, "e1")
        # Stamped with its content's time, the same repair would lose to the removal.
        plain = found_event("bkt", "user_1/a.ogg", head(), WRITTEN, "r")
        assert plan_objects([tombstone], [plain], stamp).stale_ignored == 1

    def test_a_removal_after_the_repair_wins(self) -> None:
        repair = found_event("bkt", "user_1/a.ogg", head(), WRITTEN, "r")
        removed = event(EventKind.REMOVED, seq=REAL_NS + 10**9, at=WRITTEN + timedelta(seconds=1))
        assert self._final(removed, repair).deleted
        assert self._final(repair, removed).deleted


def test_decide_treats_repairs_like_what_they_stand_for() -> None:
    from consumer.index import decide

    assert decide(None, found_event("bkt", "k", head(), WRITTEN, "r")) is Action.INSERT
    assert decide(None, gone_event(row("k"), WRITTEN, "r")) is Action.INSERT_TOMBSTONE


class TestReplayArguments:
    NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("text", "ago"),
        [("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
         ("1w", timedelta(weeks=1)), ("45s", timedelta(seconds=45)), ("0m", timedelta())],
    )  # fmt: skip
    def test_relative(self, text: str, ago: timedelta) -> None:
        assert parse_since(text, self.NOW) == self.NOW - ago

    def test_iso_times_with_and_without_offset(self) -> None:
        assert parse_since("2026-05-04T10:00:00+02:00", self.NOW) == datetime(
            2026, 5, 4, 8, tzinfo=UTC
        )
        assert parse_since("2026-05-04T10:00", self.NOW) == datetime(2026, 5, 4, 10, tzinfo=UTC)
        assert parse_since("2026-05-01", self.NOW) == datetime(2026, 5, 1, tzinfo=UTC)

    @pytest.mark.parametrize("text", ["yesterday", "2x", "-2h", "", "2026-13-01", "2027-01-01"])
    def test_bad_values(self, text: str) -> None:
        with pytest.raises(InvalidInput, match="--since"):
            parse_since(text, self.NOW)

    def test_group_names_the_main_group_and_the_time(self) -> None:
        assert replay_group("indexer", self.NOW) == "indexer-replay-20260504T120000000000Z"


def test_a_reconcile_without_a_screen_says_nothing_while_it_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress: Progress = NoProgress()
    progress.show("reconcile: listed 1000")
    progress.done()
    assert capsys.readouterr() == ("", "")


def test_a_found_repair_starts_processing_a_gone_one_does_not() -> None:
    from consumer.processing.rules import Rule, select_jobs

    rule = Rule(bucket="bkt", processors=("audio-probe",))
    found = found_event("bkt", "user_1/a.ogg", head(), WRITTEN, "r")
    gone = gone_event(row("user_1/b.ogg"), WRITTEN, "r")
    planned = select_jobs(
        [(found, 0), (gone, 1)], [rule], available=frozenset({"audio-probe"}), results_bucket="x"
    )
    assert [(p.job.request.key, p.job.request.sequencer) for p in planned] == [
        ("user_1/a.ogg", found.sequencer)
    ]
