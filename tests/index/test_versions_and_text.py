"""Listings as S3 shows them (current objects, every version) and full-text search of
transcripts, on both backends (tests/index/conftest.py gives a fresh database per test)."""

from __future__ import annotations

import pytest

from consumer.errors import InvalidInput
from consumer.events import EventKind, ObjectEvent
from consumer.index import IndexStore, ObjectQuery, ObjectRecord, Transcript, UsageRow, Versions
from tests.conftest import Backend
from tests.index.factories import event

pytestmark = pytest.mark.integration

C, M, R = EventKind.CREATED, EventKind.METADATA_CHANGED, EventKind.REMOVED
MARKER = "s3:ObjectRemoved:DeleteMarkerCreated"


async def apply(store: IndexStore, *events: ObjectEvent) -> None:
    await store.apply_batch([(e, None) for e in events])


async def a_versioned_story(store: IndexStore) -> None:
    """a.ogg: two versions. gone.ogg: a version hidden by a delete marker. purged.ogg: its
    only version deleted for good. plain: unversioned, deleted; plain2: unversioned, live."""
    await apply(
        store,
        event(seq=1, key="a.ogg", version_id="v1", size=10),
        event(seq=2, key="a.ogg", version_id="v2", size=20),
        event(seq=3, key="gone.ogg", version_id="g1", size=30),
        event(R, seq=4, key="gone.ogg", version_id="m1", event_name=MARKER),
        event(seq=5, key="purged.ogg", version_id="p1", size=50),
        event(R, seq=6, key="purged.ogg", version_id="p1"),
        event(seq=7, key="plain", size=70),
        event(R, seq=8, key="plain"),
        event(seq=9, key="plain2", size=90),
    )


def rows(records: list[ObjectRecord]) -> list[tuple[str, str, bool | None, bool]]:
    return [(r.key, r.version_id, r.is_latest, r.is_delete_marker) for r in records]


class TestListings:
    async def test_current_objects_are_what_list_objects_v2_shows(self, store: IndexStore) -> None:
        await a_versioned_story(store)
        current = await store.list_objects(ObjectQuery(bucket="bkt", versions=Versions.CURRENT))
        assert rows(current) == [("a.ogg", "v2", True, False), ("plain2", "", True, False)]
        assert [r.size for r in current] == [20, 90]

    async def test_all_versions_are_what_list_object_versions_shows(
        self, store: IndexStore
    ) -> None:
        await a_versioned_story(store)
        every = await store.list_objects(ObjectQuery(bucket="bkt", versions=Versions.ALL))
        assert rows(every) == [
            ("a.ogg", "v1", False, False),
            ("a.ogg", "v2", True, False),
            ("gone.ogg", "g1", False, False),
            ("gone.ogg", "m1", True, True),
            ("plain2", "", True, False),
        ]

    async def test_rows_view_keeps_its_meaning_for_the_indexer_and_reconcile(
        self, store: IndexStore
    ) -> None:
        await a_versioned_story(store)
        live = await store.list_objects(ObjectQuery(bucket="bkt"))
        assert [(r.key, r.version_id) for r in live] == [
            ("a.ogg", "v1"),
            ("a.ogg", "v2"),
            ("gone.ogg", "g1"),
            ("plain2", ""),
        ]
        assert all(r.is_latest is None for r in live)

    async def test_removing_the_latest_version_makes_the_one_before_current(
        self, store: IndexStore
    ) -> None:
        await a_versioned_story(store)
        await apply(store, event(R, seq=10, key="a.ogg", version_id="v2"))
        current = await store.list_objects(ObjectQuery(prefix="a.ogg", versions=Versions.CURRENT))
        assert rows(current) == [("a.ogg", "v1", True, False)]
        # The delete marker removed for good: the version behind it is current again.
        await apply(store, event(R, seq=11, key="gone.ogg", version_id="m1"))
        current = await store.list_objects(
            ObjectQuery(prefix="gone.ogg", versions=Versions.CURRENT)
        )
        assert rows(current) == [("gone.ogg", "g1", True, False)]

    async def test_row_filters_look_at_the_latest_version_only(self, store: IndexStore) -> None:
        await apply(
            store,
            event(seq=1, key="k", version_id="v1", user_id="1", metadata={"lang": "ru"}),
            event(seq=2, key="k", version_id="v2", user_id="2", metadata={"lang": "en"}),
        )
        assert await store.list_objects(ObjectQuery(user_id="1", versions=Versions.CURRENT)) == []
        assert (
            await store.list_objects(
                ObjectQuery(metadata={"lang": "ru"}, versions=Versions.CURRENT)
            )
            == []
        )
        older = await store.list_objects(ObjectQuery(user_id="1", versions=Versions.ALL))
        assert rows(older) == [("k", "v1", False, False)]
        # A tagging change of the older version does not make it the latest.
        await apply(store, event(M, seq=1, key="k", version_id="v1", metadata={"x": "y"}))
        assert rows(await store.list_objects(ObjectQuery(versions=Versions.CURRENT))) == [
            ("k", "v2", True, False)
        ]

    async def test_pagination_in_the_all_view(self, store: IndexStore) -> None:
        await apply(
            store,
            *(event(seq=n, key=f"k{n % 3}", version_id=f"v{n:02}") for n in range(1, 11)),
        )
        everything = await store.list_objects(ObjectQuery(versions=Versions.ALL))
        pages: list[list[ObjectRecord]] = []
        after = None
        while page := await store.list_objects(
            ObjectQuery(versions=Versions.ALL, limit=4, after=after)
        ):
            pages.append(page)
            after = (page[-1].bucket, page[-1].key, page[-1].version_id)
        assert [len(p) for p in pages] == [4, 4, 2]
        assert [r for p in pages for r in p] == everything
        assert sum(1 for r in everything if r.is_latest) == 3

    async def test_usage_counts_live_and_stored_separately(self, store: IndexStore) -> None:
        await a_versioned_story(store)
        await apply(store, event(seq=12, bucket="b2", key="x", size=5, user_id=None))
        assert await store.usage(by="bucket") == [
            UsageRow("b2", 1, 5, 1, 5),
            # live: a.ogg v2 + plain2; stored: a.ogg v1, v2, gone.ogg g1 and plain2
            UsageRow("bkt", 2, 110, 4, 150),
        ]
        assert await store.usage(by="user") == [
            UsageRow("1", 2, 110, 4, 150),
            UsageRow(None, 1, 5, 1, 5),
        ]


RUSSIAN = "Сегодня мы обсудили бюджет проекта на следующий квартал"
ENGLISH = "We talked about the budget of the next quarter"


class TestTextSearch:
    async def index_two(self, store: IndexStore) -> None:
        await apply(
            store,
            event(seq=1, key="ru.ogg", metadata={"session-type": "interview"}),
            event(seq=2, key="en.ogg", metadata={"session-type": "memo"}),
        )
        await store.put_transcript(Transcript("bkt", "ru.ogg", "", "transcribe", RUSSIAN, "ru"))
        await store.put_transcript(
            Transcript("bkt", "en.ogg", "", "transcribe", ENGLISH, "english")
        )

    async def found(self, store: IndexStore, text: str, **filters: object) -> list[str]:
        records = await store.list_objects(
            ObjectQuery(
                versions=Versions.CURRENT,
                text=text,
                **filters,  # type: ignore[arg-type]
            )
        )
        return [r.key for r in records]

    async def test_a_russian_phrase_is_found_with_a_snippet(self, store: IndexStore) -> None:
        await self.index_two(store)
        (hit,) = await store.list_objects(
            ObjectQuery(versions=Versions.CURRENT, text="Бюджет проекта")
        )
        assert hit.key == "ru.ogg"
        assert hit.snippet is not None
        assert "[бюджет]" in hit.snippet
        assert await self.found(store, "budget") == ["en.ogg"]
        assert await self.found(store, "бюджет квартал") == ["ru.ogg"]
        assert await self.found(store, "бюджет budget") == []

    async def test_combined_with_metadata_filters(self, store: IndexStore) -> None:
        await self.index_two(store)
        assert await self.found(store, "бюджет", metadata={"session-type": "interview"}) == [
            "ru.ogg"
        ]
        assert await self.found(store, "бюджет", metadata={"session-type": "memo"}) == []
        assert await self.found(store, "budget", bucket="other") == []

    async def test_retranscription_replaces_and_deletion_removes(
        self, store: IndexStore, backend: Backend
    ) -> None:
        await self.index_two(store)
        await store.put_transcript(
            Transcript("bkt", "ru.ogg", "", "transcribe", "Совсем другой разговор", "ru")
        )
        assert await self.found(store, "бюджет") == []
        assert await self.found(store, "разговор") == ["ru.ogg"]
        await apply(store, event(R, seq=3, key="en.ogg"))
        assert await self.found(store, "budget") == []
        assert await backend.fetch("SELECT key FROM transcripts ORDER BY key") == [("ru.ogg",)]

    async def test_a_delete_marker_hides_but_keeps_the_transcript(self, store: IndexStore) -> None:
        await apply(store, event(seq=1, key="v.ogg", version_id="v1"))
        await store.put_transcript(Transcript("bkt", "v.ogg", "v1", "transcribe", RUSSIAN, "ru"))
        await apply(store, event(R, seq=2, key="v.ogg", version_id="m1", event_name=MARKER))
        assert await self.found(store, "бюджет") == []
        every = await store.list_objects(ObjectQuery(versions=Versions.ALL, text="бюджет"))
        assert rows(every) == [("v.ogg", "v1", False, False)]

    async def test_what_cannot_be_searched(self, store: IndexStore) -> None:
        with pytest.raises(InvalidInput, match="no words"):
            await store.list_objects(ObjectQuery(versions=Versions.CURRENT, text=' "*- '))
        with pytest.raises(InvalidInput):
            await store.list_objects(ObjectQuery(text="budget"))
        # Query syntax typed by a person is only words to the index.
        await self.index_two(store)
        assert await self.found(store, 'budget" OR "бюджет') == []
        assert await self.found(store, "(budget*)") == ["en.ogg"]
