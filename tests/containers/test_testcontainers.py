"""The testcontainers path of tests/conftest.py, run for real: one integration module in a
pytest of its own, whose ``stack`` fixture finds this suite's engine and starts MinIO,
Kafka and PostgreSQL through tests/docker_stack.py from the locally built images."""

from __future__ import annotations

import subprocess
import sys
import time

from infra.docker.engine import Engine
from infra.docker.images import Images
from tests.containers.compose import REPO_ROOT

MODULE = "tests/integration/test_minio_to_kafka.py"
# Variables that would make conftest take endpoints from the environment instead.
ENDPOINT_VARS = (
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "KAFKA_BOOTSTRAP_SERVERS",
    "POSTGRES_URL",
    "VOXPERSONA_TEST_NO_DOCKER",
)


def _created_images(engine: Engine, since: int) -> set[str]:
    out = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            str(since),
            "--until",
            str(int(time.time()) + 1),
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--format",
            "{{.From}}",
        ],
        capture_output=True,
        text=True,
        env=engine.env(),
        timeout=60,
        check=True,
    ).stdout
    return set(out.split())


def test_an_integration_module_runs_on_testcontainers(
    docker_engine: Engine, images: Images
) -> None:
    env = {key: value for key, value in docker_engine.env().items() if key not in ENDPOINT_VARS}
    env.update(images.compose_env())
    # Ryuk (testcontainers' reaper) is an image from a registry; the fixtures' own context
    # managers remove the containers and the network.
    env["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    since = int(time.time()) - 1
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", MODULE, "-p", "no:cacheprovider", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1]
    # The containers came from the local builds, i.e. conftest took the docker path.
    assert {images.kafka, images.minio, images.postgres} <= _created_images(docker_engine, since)
    leftovers = subprocess.run(
        ["docker", "ps", "-aq"],
        capture_output=True,
        text=True,
        env=docker_engine.env(),
        timeout=60,
        check=True,
    ).stdout.split()
    assert not leftovers, f"testcontainers left containers: {leftovers}"
