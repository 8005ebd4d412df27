"""``Shared``, the health checks' cache: one run for callers that come together, its
result reused inside the TTL, and a caller that goes away does not cancel the others'."""

from __future__ import annotations

import asyncio

import pytest

from consumer.health import Shared


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_callers_that_come_together_share_one_run_and_its_result() -> None:
    gate = asyncio.Event()
    runs: list[int] = []

    async def compute() -> int:
        runs.append(1)
        await gate.wait()
        return len(runs)

    clock = _Clock()
    shared = Shared(compute, ttl_s=2.0, clock=clock)
    waiting = [asyncio.create_task(shared.get()) for _ in range(25)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 25
    assert shared.runs == 1

    clock.now += 1.9  # inside the TTL
    assert await shared.get() == 1
    assert shared.runs == 1
    clock.now += 0.2  # past it
    assert await shared.get() == 2
    assert shared.runs == 2


async def test_a_caller_that_goes_away_leaves_the_run_to_the_others() -> None:
    gate = asyncio.Event()

    async def compute() -> str:
        await gate.wait()
        return "checked"

    shared = Shared(compute, ttl_s=0.0)
    impatient = asyncio.create_task(shared.get())
    patient = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    gate.set()
    assert await patient == "checked"
    assert shared.runs == 1


async def test_without_a_ttl_each_call_after_a_run_runs_again() -> None:
    async def compute() -> int:
        return 7

    shared = Shared(compute, ttl_s=0.0)
    for _ in range(3):
        assert await shared.get() == 7
    assert shared.runs == 3
