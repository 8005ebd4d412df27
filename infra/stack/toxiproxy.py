"""Toxiproxy: the fault proxy of the network-fault drills, built from its Go module like
MinIO and cached beside it. It is not a server of the stack (``up`` never starts it): the
fault suite starts one per test session, on 127.0.0.1, and puts it between the consumer
and each dependency (tests/toxiproxy.py drives it over its HTTP API)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from infra.stack.common import StackError, say
from infra.stack.install import cache_dir, require_tool, run_logged

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_VERSION = "v2.5.0"
# The module's server command is cmd/server, so ``go install`` names the binary "server".
TOXIPROXY_SERVER_PACKAGE = f"{TOXIPROXY_MODULE}/cmd/server"


def ensure_toxiproxy_binary() -> Path:
    """Build the pinned Toxiproxy server with ``go install`` unless the cache has it."""
    target_dir = cache_dir() / "toxiproxy" / TOXIPROXY_VERSION
    binary = target_dir / "server"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = require_tool("go", "install Go >= 1.24 (https://go.dev/doc/install) to build Toxiproxy")
    say(f"building Toxiproxy {TOXIPROXY_VERSION} with go install (first time only)")
    env = {
        **os.environ,
        "GOBIN": str(target_dir),
        "GOPATH": str(cache_dir() / "go"),
        "GOMODCACHE": str(cache_dir() / "gomod"),
        "GOCACHE": str(cache_dir() / "gobuild"),
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }
    started = time.monotonic()
    run_logged(
        [go, "install", f"{TOXIPROXY_SERVER_PACKAGE}@{TOXIPROXY_VERSION}"],
        cache_dir() / "logs" / "toxiproxy-build.log",
        env,
        "building Toxiproxy",
    )
    if not binary.is_file():
        raise StackError(f"go install finished but {binary} is missing")
    say(f"Toxiproxy built in {time.monotonic() - started:.0f}s: {binary}")
    return binary
