"""Toxiproxy: the fault proxy of the network-fault drills, built from its Go module like
MinIO and cached beside it. It is not a server of the stack (``up`` never starts it): the
fault suite starts one per test session, on 127.0.0.1, and puts it between the consumer
and each dependency (tests/toxiproxy.py drives it over its HTTP API)."""

from __future__ import annotations

from pathlib import Path

from infra.stack.install import go_installed_binary

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_VERSION = "v2.5.0"
# The module's server command is cmd/server, so ``go install`` names the binary "server".
TOXIPROXY_SERVER_PACKAGE = f"{TOXIPROXY_MODULE}/cmd/server"


def ensure_toxiproxy_binary() -> Path:
    """Build the pinned Toxiproxy server with ``go install`` unless the cache has it."""
    return go_installed_binary(
        name="Toxiproxy",
        package=TOXIPROXY_SERVER_PACKAGE,
        version=TOXIPROXY_VERSION,
        binary="server",
    )
