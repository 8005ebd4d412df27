"""Hypothesis profiles for the property tests (tests/properties, tests/index), loaded by
tests/conftest.py.

``dev`` (default): a fresh random run each time, failing examples kept in the local
example database (.hypothesis/) and tried first next time. ``ci`` (chosen when CI is set):
derandomized, so CI runs the same examples every time and a red run can be rerun as it
was, with no example database. HYPOTHESIS_PROFILE picks one explicitly (``thorough``:
ten times the examples, for a longer hunt by hand).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

# Examples per property: enough to find the bugs these tests found, small enough that the
# whole directory runs in seconds. Deadlines off: a shared 2-core machine makes single
# examples slow now and then, and speed is the benchmarks' business.
EXAMPLES = 150


def load_hypothesis_profile() -> None:
    common: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("dev", max_examples=EXAMPLES, **common)
    settings.register_profile(
        "ci", max_examples=EXAMPLES, derandomize=True, database=None, **common
    )
    settings.register_profile("thorough", max_examples=10 * EXAMPLES, **common)
    chosen = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(chosen)
