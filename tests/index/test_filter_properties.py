"""The listing filters on generated names and values, on SQLite and PostgreSQL: whatever a
metadata name or value or a key prefix holds (quotes, SQL, LIKE wildcards, backslashes,
any Unicode), it is matched as data, never read as SQL or as a pattern.

One store per backend serves every example (each example writes to a bucket of its own),
so a property costs a few statements per example.
"""

from __future__ import annotations

import itertools
from typing import Final

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer.errors import InvalidInput
from consumer.index import IndexStore, ObjectQuery, Versions
from tests.index.factories import event

pytestmark = pytest.mark.integration

# Fewer examples than the pure properties: each one is a few round trips to a database.
EXAMPLES: Final = 60
_FIXTURE_PER_TEST: Final = settings(
    max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# What SQL, LIKE and JSON make special, mixed into the generated text.
SPECIAL: Final = ["'", '"', "\\", "%", "_", "?", "$1", "--", ";", "' OR '1'='1", "*", "\t", "é"]

_buckets = itertools.count()

# Any Unicode but NUL, which the decoder refuses (no server sends it), so no indexed
# name or value holds it: a filter holding it is refused (the last property).
text = st.lists(
    st.one_of(
        st.sampled_from(SPECIAL),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
    ),
    max_size=4,
).map("".join)
names = text.filter(bool)


def _bucket() -> str:
    return f"prop-{next(_buckets)}"


@_FIXTURE_PER_TEST
@given(
    metadata=st.dictionaries(names, text, min_size=1, max_size=3),
    other=st.dictionaries(names, text, max_size=3),
)
@example(metadata={"a": "' OR '1'='1"}, other={"a": "x"})
@example(metadata={"k%": "_"}, other={"k_": "%"})
@example(metadata={"SESSION-Type": "interview"}, other={})
async def test_metadata_filters_match_names_and_values_as_data(
    store: IndexStore, metadata: dict[str, str], other: dict[str, str]
) -> None:
    bucket = _bucket()
    # Names as the decoder stores them: lower-cased.
    stored = {name.lower(): value for name, value in metadata.items()}
    others = {name.lower(): value for name, value in other.items()}
    near = {name: value + "x" for name, value in stored.items()}  # every value differs
    await store.apply_batch(
        [
            (event(seq=1, bucket=bucket, key="match", metadata=stored | {"extra": "1"}), None),
            (event(seq=2, bucket=bucket, key="near", metadata=near), None),
            (event(seq=3, bucket=bucket, key="other", metadata=others), None),
            (event(seq=4, bucket=bucket, key="none"), None),
        ]
    )
    expected = ["match"] + (["other"] if stored.items() <= others.items() else [])
    for asked in (metadata, {name.upper(): value for name, value in metadata.items()}):
        if {name.lower() for name in asked} != set(stored):
            continue  # upper-casing merged or changed a name (e.g. "ß" -> "SS")
        found = await store.list_objects(ObjectQuery(bucket=bucket, metadata=asked))
        assert [r.key for r in found] == expected, asked
    for record in await store.list_objects(ObjectQuery(bucket=bucket)):
        wanted = {"match": stored | {"extra": "1"}, "near": near, "other": others, "none": {}}
        assert record.metadata == wanted[record.key], "metadata changed on the way"


@_FIXTURE_PER_TEST
@given(keys=st.lists(text.filter(bool), min_size=1, max_size=6, unique=True), cut=st.integers(0, 8))
@example(keys=["a%b", "axb", "a_c", "a\\d", "a\\\\d"], cut=2)
async def test_a_prefix_matches_keys_that_start_with_it_literally(
    store: IndexStore, keys: list[str], cut: int
) -> None:
    bucket = _bucket()
    await store.apply_batch(
        [(event(seq=n + 1, bucket=bucket, key=key), None) for n, key in enumerate(keys)]
    )
    for key in keys:
        prefix = key[:cut] or key
        found = await store.list_objects(ObjectQuery(bucket=bucket, prefix=prefix))
        assert [r.key for r in found] == sorted(k for k in keys if k.startswith(prefix)), prefix


@pytest.mark.parametrize(
    "query",
    [
        {"metadata": {"a\x00": "1"}},
        {"metadata": {"a": "\x001"}},
        {"prefix": "user_1/\x00"},
        {"bucket": "b\x00"},
        {"user_id": "\x00"},
        {"text": "hello\x00", "versions": Versions.CURRENT},
    ],
)
async def test_a_filter_holding_a_nul_is_refused_on_both_backends(
    store: IndexStore, query: dict[str, object]
) -> None:
    # Found by the properties above: PostgreSQL refused a NUL with a permanent
    # IndexWriteFailed, SQLite matched nothing. No indexed text can hold one.
    with pytest.raises(InvalidInput, match="NUL"):
        await store.list_objects(ObjectQuery(**query))  # type: ignore[arg-type]
