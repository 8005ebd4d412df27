"""Fixtures for the index contract suite: a started store on a fresh database per test,
on each backend (``backend`` comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from consumer.index import IndexStore
from tests.conftest import Backend


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[IndexStore]:
    async with backend.new_store() as started:
        yield started
