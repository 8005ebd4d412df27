"""A real Toxiproxy (built by infra/stack/toxiproxy.py) and a small typed client of its
HTTP API: proxies between the consumer and a dependency, and the toxics that hurt them.

The server runs on 127.0.0.1 with its control API on a free port; every proxy listens
on 127.0.0.1 too. Toxics are named after their kind, so a scenario adds one and removes
it by the same name (``toxic`` does both around a block, also when the block fails).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from infra.stack import ensure_toxiproxy_binary, free_port

Stream = Literal["upstream", "downstream"]
API_TIMEOUT_S = 5.0
START_TIMEOUT_S = 20.0


class ToxiproxyError(Exception):
    """The API refused a request or did not answer."""


@dataclass(frozen=True)
class Toxic:
    """One toxic: its kind (Toxiproxy's ``type``), the direction it acts on and its
    attributes (names as in Toxiproxy's documentation: ``latency``, ``jitter``, ``rate``,
    ``timeout``, ``bytes``, ``average_size``, ``size_variation``, ``delay``)."""

    kind: str
    attributes: Mapping[str, int]
    stream: Stream = "downstream"

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.stream}"


@dataclass(frozen=True)
class Proxy:
    name: str
    listen: str  # host:port the proxy accepts on
    upstream: str  # host:port it forwards to

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class ToxiproxyClient:
    """The control API at ``api_url`` (``http://127.0.0.1:<port>``)."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")

    def _call(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise ToxiproxyError(f"{method} {path}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ToxiproxyError(f"{method} {path}: {exc}") from None
        return json.loads(raw) if raw.strip() else None

    def version(self) -> str:
        request = urllib.request.Request(self.api_url + "/version")
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as response:
            return str(response.read().decode().strip())

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> Proxy:
        """A proxy from ``listen`` (port 0: a free one) to ``upstream``; an existing
        proxy of that name is replaced."""
        with contextlib.suppress(ToxiproxyError):
            self._call("DELETE", f"/proxies/{name}")
        made = self._call(
            "POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream}
        )
        return Proxy(made["name"], made["listen"], made["upstream"])

    def delete_proxy(self, proxy: Proxy) -> None:
        self._call("DELETE", f"/proxies/{proxy.name}")

    def add(self, proxy: Proxy, toxic: Toxic) -> None:
        self._call(
            "POST",
            f"/proxies/{proxy.name}/toxics",
            {
                "name": toxic.name,
                "type": toxic.kind,
                "stream": toxic.stream,
                "toxicity": 1.0,
                "attributes": dict(toxic.attributes),
            },
        )

    def remove(self, proxy: Proxy, toxic: Toxic) -> None:
        self._call("DELETE", f"/proxies/{proxy.name}/toxics/{toxic.name}")

    def toxics(self, proxy: Proxy) -> list[str]:
        return [str(t["name"]) for t in self._call("GET", f"/proxies/{proxy.name}/toxics")]

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._call("POST", "/reset")

    @contextlib.contextmanager
    def toxic(self, proxy: Proxy, toxic: Toxic) -> Iterator[None]:
        """``toxic`` on ``proxy`` for the block; removed afterwards, also on failure."""
        self.add(proxy, toxic)
        try:
            yield
        finally:
            self.remove(proxy, toxic)


class ToxiproxyServer:
    """``with ToxiproxyServer(log) as client:`` one Toxiproxy process on 127.0.0.1,
    stopped (by its pid) when the block ends."""

    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ToxiproxyClient:
        binary = ensure_toxiproxy_binary()
        port = free_port()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(binary), "-host", "127.0.0.1", "-port", str(port)],
                # Its own log level: a line per connection is too much for a test log.
                env={**os.environ, "LOG_LEVEL": "warn"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        client = ToxiproxyClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise ToxiproxyError(f"toxiproxy exited: {self._log_tail()}")
            with contextlib.suppress(OSError):
                client.version()
                return client
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise ToxiproxyError(f"toxiproxy not ready in {START_TIMEOUT_S} s")
            time.sleep(0.1)

    def _log_tail(self) -> str:
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-10:])

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
