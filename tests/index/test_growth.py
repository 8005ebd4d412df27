"""``IndexStore.growth``: objects and bytes per UTC day from the journal, on both backends.

The days are built so that the net of each day equals the change of ``usage`` over it:
overwrites add no object and replace bytes, a second removal removes nothing, reconcile's
repairs count like the writes and removals they stand for.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from consumer.events import RECONCILE_FOUND, RECONCILE_GONE, EventKind
from consumer.index import GrowthRow, IndexStore
from consumer.index.sql import every_day
from tests.index.factories import event

pytestmark = pytest.mark.integration

DAY1 = datetime(2026, 3, 1, 10, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY1 + timedelta(days=2)
C, R = EventKind.CREATED, EventKind.REMOVED


async def _history(store: IndexStore) -> None:
    a, b, c = "user_1/a.ogg", "user_2/b.ogg", "user_1/c.ogg"
    await store.apply_batch(
        [
            (event(C, seq=1, key=a, size=100, at=DAY1), None),
            (event(C, seq=2, key=b, size=200, user_id="2", at=DAY1), None),
            # Another bucket, and a redelivery: neither may count twice or leak in.
            (event(C, seq=2, key=b, size=200, user_id="2", at=DAY1), None),
            (event(C, seq=3, bucket="other", key=a, size=7, at=DAY1), None),
        ]
    )
    await store.apply_batch(
        [
            (event(C, seq=4, key=a, size=300, at=DAY2), None),  # overwrite
            (event(R, seq=5, key=b, at=DAY2 + timedelta(hours=1)), None),
            (event(R, seq=6, key=b, at=DAY2 + timedelta(hours=2)), None),  # removes nothing
        ]
    )
    await store.apply_batch(
        [
            (event(EventKind.RECONCILED, seq=7, key=c, event_name=RECONCILE_FOUND, size=50,
                   etag="e7", at=DAY3), None),
            (event(EventKind.RECONCILED, seq=8, key=a, event_name=RECONCILE_GONE, at=DAY3),
             None),
        ]
    )  # fmt: skip


async def test_growth_per_day_matches_the_change_of_usage(store: IndexStore) -> None:
    await _history(store)
    rows = await store.growth(since=DAY1.date(), bucket="bkt")
    assert rows == [
        GrowthRow(DAY1.date(), objects_created=2, bytes_created=300),
        GrowthRow(DAY2.date(), 0, 300, 1, 300),
        GrowthRow(DAY3.date(), 1, 50, 1, 300),
    ]
    assert [(r.net_objects, r.net_bytes) for r in rows] == [(2, 300), (-1, 0), (0, -250)]
    usage = await store.usage(by="bucket")
    bkt = next(u for u in usage if u.group == "bkt")
    assert (bkt.objects, bkt.bytes) == (
        sum(r.net_objects for r in rows),
        sum(r.net_bytes for r in rows),
    )


async def test_growth_window_sees_history_before_it(store: IndexStore) -> None:
    await _history(store)
    rows = await store.growth(since=DAY2.date(), bucket="bkt")
    # The overwrite of day 2 is known as one because day 1 is still read.
    assert rows[0] == GrowthRow(DAY2.date(), 0, 300, 1, 300)
    assert [r.day for r in rows] == [DAY2.date(), DAY3.date()]


async def test_growth_all_buckets_and_per_user(store: IndexStore) -> None:
    await _history(store)
    everything = await store.growth(since=DAY1.date())
    assert everything[0] == GrowthRow(DAY1.date(), 3, 307)
    user_2 = await store.growth(since=DAY1.date(), user_id="2")
    assert user_2 == [GrowthRow(DAY1.date(), 1, 200), GrowthRow(DAY2.date(), 0, 0, 1, 200)]
    assert await store.growth(since=DAY3.date() + timedelta(days=1)) == []
    assert await store.growth(since=DAY1.date(), bucket="no-such-bucket") == []


def test_every_day_fills_days_without_changes() -> None:
    first = date(2026, 3, 1)
    filled = every_day([GrowthRow(date(2026, 3, 2), 1, 10)], first, date(2026, 3, 4))
    assert filled == [
        GrowthRow(first),
        GrowthRow(date(2026, 3, 2), 1, 10),
        GrowthRow(date(2026, 3, 3)),
        GrowthRow(date(2026, 3, 4)),
    ]
    assert every_day([], first, first - timedelta(days=1)) == []
