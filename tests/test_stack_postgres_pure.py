"""The local stack's PostgreSQL settings: durable unless the stack is a throwaway one."""

from __future__ import annotations

import signal

from infra.stack import Stack
from infra.stack.postgres import Postgres, durability_settings


def test_a_stack_is_durable_unless_asked_to_be_a_throwaway() -> None:
    # make run's stack (and `python -m infra.stack up`) builds Stack() without the flag.
    assert Stack().throwaway is False
    assert durability_settings(False) == ("fsync=on",)


def test_a_throwaway_stack_skips_the_flushes_to_disk() -> None:
    settings = durability_settings(True)
    assert "fsync=off" in settings
    assert "fsync=on" not in settings


def test_postgres_is_stopped_by_its_fast_shutdown() -> None:
    # SIGTERM (smart shutdown) would wait for connected clients until the SIGKILL.
    assert Postgres.stop_signal is signal.SIGINT
