"""Zipkin (optional, ``up --observed``): the server's executable jar with its Lens UI from
Maven Central through infra/zipkin/pom.xml, in-memory storage, on 127.0.0.1.

Spans reach it through its own JSON API (``/api/v2/spans``): Zipkin 3.x has no OTLP
receiver (the OTLP module of zipkin-otel is not on Maven Central), so the stack's env sets
the standard ``OTEL_TRACES_EXPORTER=zipkin``. A deployment with an OTLP collector keeps
``OTEL_EXPORTER_OTLP_ENDPOINT`` and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from pathlib import Path

from infra.stack.common import INFRA_DIR, StackError, say
from infra.stack.install import cache_dir, require_tool, run_logged
from infra.stack.server import Context

ZIPKIN_POM = INFRA_DIR / "zipkin" / "pom.xml"


def ensure_zipkin_jar() -> Path:
    """Zipkin's exec jar, copied from Maven Central into the cache once per pom."""
    digest = hashlib.sha256(ZIPKIN_POM.read_bytes()).hexdigest()[:12]
    libs = cache_dir() / "zipkin" / digest
    jars = sorted(libs.glob("zipkin-server-*-exec.jar")) if libs.is_dir() else []
    if jars and (libs / ".complete").is_file():
        return jars[0]
    require_tool("java", "install a Java 17+ runtime (Debian: openjdk-17-jre-headless)")
    mvn = require_tool("mvn", "install Apache Maven (Debian: apt-get install maven)")
    say("fetching the Zipkin server jar with Maven (first time only)")
    shutil.rmtree(libs, ignore_errors=True)
    run_logged(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(ZIPKIN_POM),
            f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        cache_dir() / "logs" / "zipkin-jar.log",
        dict(os.environ),
        "fetching the Zipkin jar",
    )
    jars = sorted(libs.glob("zipkin-server-*-exec.jar"))
    if not jars:
        raise StackError(f"Maven finished but no zipkin-server exec jar is in {libs}")
    (libs / ".complete").write_text("ok\n")
    return jars[0]


def zipkin_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(json.load(response).get("status") == "UP")
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Zipkin:
    name = "zipkin"
    ports = ("zipkin_port",)
    data_ports = ()
    others_wait = False
    stop_signal = signal.SIGTERM

    def install(self) -> Path:
        return ensure_zipkin_jar()

    def start(self, ctx: Context, installed: Path) -> None:
        java = require_tool("java", "install a Java 17+ runtime")
        port = ctx.state.zipkin_port
        # Its scratch files under the state dir, which also marks the process as this
        # stack's (``down`` stops only processes whose command line names the state dir).
        scratch = ctx.state_dir / "zipkin" / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        ctx.spawn(
            self.name,
            [
                java,
                # A small heap and quick start: in-memory traces of one developer's stack.
                "-Xms32m",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                f"-Djava.io.tmpdir={scratch}",
                "-jar",
                str(installed),
                f"--armeria.ports[0].port={port}",
                "--armeria.ports[0].ip=127.0.0.1",
            ],
            {**os.environ, "STORAGE_TYPE": "mem", "QUERY_PORT": str(port)},
        )

    def ready(self, ctx: Context) -> bool:
        return zipkin_ready(ctx.state.zipkin_port)

    def after_ready(self, ctx: Context) -> None:
        return None

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "OTEL_TRACES_EXPORTER": "zipkin",
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT": (
                f"http://127.0.0.1:{ctx.state.zipkin_port}/api/v2/spans"
            ),
        }
