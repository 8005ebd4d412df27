"""The PostgreSQL variant (docker-compose.yml + docker-compose.postgres.yml): two consumer
replicas in one Kafka group sharing one index in the postgres service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.docker.engine import Engine
from infra.docker.images import Images
from tests.containers.compose import ComposeProject
from tests.containers.helpers import host_minio, probe_result, upload_wav

REPLICAS = 2
UPLOADS = 4


@pytest.fixture(scope="module")
def postgres_up(docker_engine: Engine, images: Images) -> Iterator[ComposeProject]:
    project = ComposeProject(
        docker_engine, images, files=("docker-compose.yml", "docker-compose.postgres.yml")
    )
    try:
        project.up()
        yield project
    finally:
        project.down()


def test_replicas_share_one_postgres_index(postgres_up: ComposeProject) -> None:
    consumers = [row for row in postgres_up.services() if row["Service"] == "consumer"]
    assert len(consumers) == REPLICAS
    assert all(row["Health"] == "healthy" for row in consumers), consumers

    client = host_minio(postgres_up)
    uploads = dict(upload_wav(client, seconds=0.5, rate=8_000) for _ in range(UPLOADS))
    # Either replica sees every object, whichever of them indexed it.
    for index in range(1, REPLICAS + 1):
        postgres_up.wait_done(set(uploads), index=index)
    for key, version_id in uploads.items():
        assert probe_result(client, key, version_id)["result"]["sample_rate"] == 8_000

    # The rows are in PostgreSQL, not in a SQLite file the replicas might share.
    count = postgres_up.run(
        "exec",
        "-T",
        "postgres",
        "psql",
        "-U",
        "voxpersona",
        "-d",
        "voxpersona",
        "-Atc",
        "SELECT count(*) FROM objects",
    )
    assert int(count.strip()) >= UPLOADS
