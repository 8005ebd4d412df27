"""Pure tests of consumer.retry: the backoff curve and the one retry loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from consumer.errors import (
    ConnectionFailed,
    ConsumerError,
    InvalidInput,
    RetriesExhausted,
    StopRequested,
)
from consumer.retry import backoff_delay_s, retry

TINY_S = 0.001


class TestBackoffDelay:
    def test_first_attempt_is_base_times_jitter(self) -> None:
        assert backoff_delay_s(1, base_s=0.5, cap_s=30.0, jitter=1.0) == 0.5
        assert backoff_delay_s(1, base_s=0.5, cap_s=30.0, jitter=0.5) == 0.25

    def test_ceiling_doubles_per_attempt(self) -> None:
        delays = [backoff_delay_s(n, base_s=0.1, cap_s=100.0, jitter=1.0) for n in range(1, 6)]
        assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])

    def test_capped(self) -> None:
        assert backoff_delay_s(10, base_s=1.0, cap_s=30.0, jitter=1.0) == 30.0
        assert backoff_delay_s(1000, base_s=1.0, cap_s=30.0, jitter=0.5) == 15.0

    def test_jitter_scales_the_ceiling(self) -> None:
        assert backoff_delay_s(3, base_s=1.0, cap_s=30.0, jitter=0.0) == 0.0
        assert backoff_delay_s(3, base_s=1.0, cap_s=30.0, jitter=0.25) == 1.0
        assert backoff_delay_s(3, base_s=1.0, cap_s=30.0, jitter=0.999) == pytest.approx(3.996)

    def test_attempt_zero_is_treated_like_the_first(self) -> None:
        assert backoff_delay_s(0, base_s=2.0, cap_s=30.0, jitter=1.0) == 2.0


class FlakyOperation:
    """An operation that raises the given errors in turn, then returns ``result``."""

    def __init__(self, errors: list[BaseException], result: str = "done") -> None:
        self._errors = list(errors)
        self._result = result
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self._errors:
            raise self._errors.pop(0)
        return self._result


def always_failing(error: Callable[[], BaseException]) -> Callable[[], Awaitable[str]]:
    async def operation() -> str:
        raise error()

    return operation


class TestRetry:
    async def test_success_on_first_call(self) -> None:
        operation = FlakyOperation([])
        assert await retry(operation, what="op", base_s=TINY_S) == "done"
        assert operation.calls == 1

    async def test_permanent_error_is_raised_at_once(self) -> None:
        error = InvalidInput("bad argument")
        operation = FlakyOperation([error])
        with pytest.raises(InvalidInput) as caught:
            await retry(operation, what="op", base_s=TINY_S, max_attempts=5)
        assert caught.value is error
        assert operation.calls == 1

    async def test_retriable_error_is_retried_until_success(self) -> None:
        operation = FlakyOperation([ConnectionFailed("down"), ConnectionFailed("still down")])
        assert await retry(operation, what="op", base_s=TINY_S, max_attempts=5) == "done"
        assert operation.calls == 3

    async def test_max_attempts_gives_retries_exhausted_with_the_last_cause(self) -> None:
        errors: list[BaseException] = [ConnectionFailed(f"down {n}") for n in range(1, 10)]
        operation = FlakyOperation(errors)
        with pytest.raises(RetriesExhausted) as caught:
            await retry(operation, what="index write", base_s=TINY_S, max_attempts=3)
        assert operation.calls == 3
        assert caught.value.__cause__ is errors[2]
        assert "index write" in str(caught.value)
        assert isinstance(caught.value, ConsumerError)
        assert not caught.value.retriable

    async def test_non_consumer_errors_propagate_unchanged(self) -> None:
        error = KeyError("boom")
        operation = FlakyOperation([error])
        with pytest.raises(KeyError) as caught:
            await retry(operation, what="op", base_s=TINY_S, max_attempts=5)
        assert caught.value is error
        assert operation.calls == 1

    async def test_on_wait_is_awaited_while_waiting(self) -> None:
        waits: list[int] = []
        operation = FlakyOperation([ConnectionFailed("down"), ConnectionFailed("down")])

        async def on_wait() -> None:
            await asyncio.sleep(0)
            waits.append(operation.calls)

        # base_s large enough that the jittered delay is almost surely > 0 (random() == 0.0
        # has probability 2**-53), cap_s small to keep the test fast.
        result = await retry(operation, what="op", base_s=0.02, cap_s=0.02, on_wait=on_wait)
        assert result == "done"
        assert operation.calls == 3
        # Called after each failed call and before the next one.
        assert sorted(set(waits)) == [1, 2]

    async def test_stop_while_waiting_raises_stop_requested(self) -> None:
        stop = asyncio.Event()
        operation = always_failing(lambda: ConnectionFailed("down"))

        async def on_wait() -> None:
            stop.set()

        with pytest.raises(StopRequested):
            await retry(operation, what="op", base_s=1.0, cap_s=1.0, on_wait=on_wait, stop=stop)

    async def test_stop_already_set_stops_after_the_first_failure(self) -> None:
        stop = asyncio.Event()
        stop.set()
        operation = FlakyOperation([ConnectionFailed("down")])
        with pytest.raises(StopRequested):
            await retry(operation, what="op", base_s=TINY_S, stop=stop)
        assert operation.calls == 1

    async def test_stop_does_not_interrupt_a_permanent_error(self) -> None:
        stop = asyncio.Event()
        stop.set()
        with pytest.raises(InvalidInput):
            await retry(
                always_failing(lambda: InvalidInput("bad")), what="op", base_s=TINY_S, stop=stop
            )
