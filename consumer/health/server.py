"""The health HTTP server inside ``run``: ``/healthz`` (the loop runs), ``/readyz`` (Kafka,
the index and MinIO answer), ``/status`` (the report) and ``/metrics`` (Prometheus), one
request per connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from consumer.errors import ConfigError
from consumer.health.checks import CHECK_TIMEOUT_S, HealthReporter

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES: Final = 8192


Response = tuple[HTTPStatus, str, bytes]


def _json(status: HTTPStatus, document: Mapping[str, Any]) -> Response:
    body = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
    return status, "application/json", body


async def route(path: str, reporter: HealthReporter) -> Response:
    """The response for a GET of ``path``."""
    if path == "/healthz":
        return _json(HTTPStatus.OK, {"status": "alive"})
    if path == "/readyz":
        ready, checks = await reporter.ready()
        document = {
            "ready": ready,
            "checks": {name: check.fields() for name, check in checks.items()},
        }
        return _json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, document)
    if path == "/status":
        report = await reporter.status()
        code = HTTPStatus.SERVICE_UNAVAILABLE if report["status"] == "unhealthy" else HTTPStatus.OK
        return _json(code, report)
    if path == "/metrics":
        return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
    return _json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})


class HealthServer:
    """``/healthz``, ``/readyz``, ``/status``, ``/metrics`` over HTTP/1.1 (one request per
    connection). Port 0 picks a free port; ``port`` tells which."""

    def __init__(self, host: str, port: int, reporter: HealthReporter) -> None:
        self._host = host
        self._port = port
        self._reporter = reporter
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve health on HEALTH_HOST:HEALTH_PORT {self._host}:{self._port}: "
                f"{exc.strerror or exc} (another process there? HEALTH_PORT=0 picks a free one)"
            ) from exc
        log.info("health server listening", host=self._host, port=self.port)

    async def close(self) -> None:
        """Stop serving, and release the reporter's clients (the server owns it)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._reporter.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CHECK_TIMEOUT_S)
            method, path = _request_line(head)
            if method not in ("GET", "HEAD"):
                status, content_type, body = _json(
                    HTTPStatus.METHOD_NOT_ALLOWED, {"error": "GET only"}
                )
            else:
                status, content_type, body = await self._answer(path)
            writer.write(
                f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # a client that sent no complete request gets nothing
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, path: str) -> Response:
        try:
            return await route(path, self._reporter)
        except Exception as exc:  # one bad answer must not take the server down
            log.warning("health request failed", path=path, error=str(exc))
            return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})


def _request_line(head: bytes) -> tuple[str, str]:
    """(method, path without the query) of a request head. Raises ValueError."""
    if len(head) > MAX_REQUEST_BYTES:
        raise ValueError("request too large")
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, target, _version = first.split(" ", 2)
    return method, target.split("?", 1)[0]
