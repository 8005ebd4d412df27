"""``python -m infra.docker build``: engine (started and stopped here unless one answers on
our socket), compose, every local image; prints the image variables for docker compose."""

from __future__ import annotations

import sys
import time

from infra.docker.engine import DockerError, engine, ensure_compose
from infra.docker.images import build_all


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m infra.docker build", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        ensure_compose()
        with engine() as eng:
            images = build_all(eng)
    except DockerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, value in images.compose_env().items():
        print(f"{name}={value}")
    print(f"# built in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
