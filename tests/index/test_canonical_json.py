"""canonical_json (msgspec) must write exactly what json.dumps wrote: stored metadata text
must not depend on which encoder wrote it."""

from __future__ import annotations

import json
import random

from consumer.index.decisions import canonical_json


def _reference(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


_CHARS = [chr(i) for i in range(0x250)] + ["\u2028", "\u2029", "\U0001f600", "é", "ж", "\ufeff"]


def test_random_metadata_is_written_as_json_dumps_writes_it() -> None:
    rng = random.Random(17)
    for _ in range(5000):
        metadata = {
            "".join(rng.choices(_CHARS, k=rng.randint(0, 6))): "".join(
                rng.choices(_CHARS, k=rng.randint(0, 8))
            )
            for _ in range(rng.randint(0, 5))
        }
        assert canonical_json(metadata) == _reference(metadata)


def test_what_msgspec_refuses_falls_back_to_the_stdlib() -> None:
    for value in ({"a": "\ud800"}, {1: "x"}, [{"b": 1, "a": [True, None, 1.5]}]):
        assert canonical_json(value) == _reference(value)
