"""``SyncVoxClient``: the same API for scripts without an event loop.

Each call runs the async method to completion on the client's own event loop
(``asyncio.Runner``), so it must not be used from inside a running loop — use
``VoxClient`` there.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from consumer.client.api import VoxClient
from consumer.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[VoxClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncVoxClient, P], T]:
    @functools.wraps(method)
    def call(self: SyncVoxClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._runner.run(method(self.client, *args, **kwargs))

    return call


async def _next(chunks: AsyncGenerator[bytes, None]) -> bytes:
    return await anext(chunks)


class SyncVoxClient:
    """Blocking twin of ``VoxClient``; use as ``with SyncVoxClient(settings) as client``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._runner = asyncio.Runner()
        self.client = VoxClient(settings if settings is not None else Settings())

    def __repr__(self) -> str:
        return f"Sync{self.client!r}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self.client.close())
        finally:
            self._runner.close()

    presign_upload = _blocking(VoxClient.presign_upload)
    presign_put = _blocking(VoxClient.presign_put)
    presign_download = _blocking(VoxClient.presign_download)
    upload = _blocking(VoxClient.upload)
    download = _blocking(VoxClient.download)
    list_objects = _blocking(VoxClient.list_objects)
    search = _blocking(VoxClient.search)
    get = _blocking(VoxClient.get)
    usage = _blocking(VoxClient.usage)
    wait_indexed = _blocking(VoxClient.wait_indexed)
    wait_removed = _blocking(VoxClient.wait_removed)
    result = _blocking(VoxClient.result)
    wait_processed = _blocking(VoxClient.wait_processed)
    delete = _blocking(VoxClient.delete)
    remove_versions = _blocking(VoxClient.remove_versions)
    stat = _blocking(VoxClient.stat)
    health = _blocking(VoxClient.health)

    def stream(
        self, bucket: str, key: str, *, version_id: str | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """The object's bytes in chunks (see ``VoxClient.stream``)."""
        chunks = self.client.stream(bucket, key, version_id=version_id, chunk_size=chunk_size)
        try:
            while True:
                try:
                    yield self._runner.run(_next(chunks))
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(chunks.aclose())
