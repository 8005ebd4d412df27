"""A local HTTP server standing in for an OpenAI-compatible transcription API.

The only stand-in the project allows (the real API is paid and out of reach). It parses the
multipart request for real and answers from a per-file script of (status, body) pairs, then
with a default transcript; every request is recorded for the test to inspect. With
``hang_next`` set it takes that many requests and never answers them (a hung API); with
``trickle_next``, it answers that many a byte at a time.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Answer = tuple[int, Any]


@dataclass(frozen=True)
class SeenRequest:
    path: str
    authorization: str | None
    model: str | None
    filename: str | None
    audio: bytes
    received_at: float = 0.0  # time.time() when the request arrived (before any delay)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a killed processor) is part of the tests, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StandIn:
    """``with StandIn() as api:`` serves on 127.0.0.1; ``api.base_url`` ends with /v1."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.requests: list[SeenRequest] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        self._delay_s = delay_s
        # The next this many requests are taken (and billed) and never answered.
        self.hang_next = 0
        # The next this many are answered a byte every ``trickle_byte_s``: each read gets
        # something, the answer takes long.
        self.trickle_next = 0
        self.trickle_byte_s = 0.25
        self._released = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def requests_by_file(self) -> dict[str, int]:
        """How many requests each file got: what a paid API would have billed."""
        with self._lock:
            counts: dict[str, int] = {}
            for seen in self.requests:
                counts[seen.filename or ""] = counts.get(seen.filename or "", 0) + 1
            return counts

    def script(self, filename: str, answers: list[Answer]) -> None:
        """Answer requests for ``filename`` with ``answers`` in turn, then succeed."""
        with self._lock:
            self._scripts[filename] = list(answers)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()  # hung requests end (unanswered) with the server
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, seen: SeenRequest) -> Answer:
        with self._lock:
            self.requests.append(seen)
            script = self._scripts.get(seen.filename or "", [])
            if script:
                return script.pop(0)
        return 200, {"text": f"transcript of {seen.filename}", "duration": 1.0}

    def _hangs(self) -> bool:
        with self._lock:
            if self.hang_next <= 0:
                return False
            self.hang_next -= 1
            return True

    def _trickles(self) -> bool:
        with self._lock:
            if self.trickle_next <= 0:
                return False
            self.trickle_next -= 1
            return True

    def _write(self, out: Any, data: bytes, byte_s: float) -> None:
        """``data`` at once, or a byte every ``byte_s`` (until the server stops)."""
        if not byte_s:
            out.write(data)
            return
        for n in range(len(data)):
            if self._released.wait(byte_s):
                return
            out.write(data[n : n + 1])
            out.flush()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received_at = time.time()
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the upload broke off: a real API bills no incomplete request
                if not self.path.endswith("/v1/audio/transcriptions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                fields, files = _multipart(self.headers.get("Content-Type", ""), body)
                filename, audio = files.get("file", (None, b""))
                seen = SeenRequest(
                    self.path, self.headers.get("Authorization"), fields.get("model"),
                    filename, audio, received_at,
                )  # fmt: skip
                answer = stand_in._answer(seen)  # recorded on arrival, like a billed call
                if stand_in._hangs():
                    stand_in._released.wait()
                    return
                if stand_in._delay_s:
                    time.sleep(stand_in._delay_s)
                self._send(*answer, byte_s=stand_in.trickle_byte_s if stand_in._trickles() else 0)

            def _send(self, status: int, payload: Any, byte_s: float = 0.0) -> None:
                data = (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                stand_in._write(self.wfile, data, byte_s)

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the test inspects ``requests``

        return Handler


Files = dict[str, tuple[str | None, bytes]]


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], Files]:
    """Form fields and files of a multipart/form-data body, parsed by the email package."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    files: Files = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[str(name)] = (part.get_filename(), payload)
        else:
            fields[str(name)] = payload.decode()
    return fields, files
