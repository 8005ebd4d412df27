"""docker compose up of the real docker-compose.yml (image variables set to the local
builds): healthy in the documented order, an upload indexed and probed inside the
containers, and the SQLite index kept on its volume across a consumer restart.

The tests share one project (module scope) and run in file order.
"""

from __future__ import annotations

import time

import httpx

from tests.containers.compose import ComposeProject
from tests.containers.helpers import host_minio, probe_result, upload_wav

# postgres runs in this variant too (the optional shared index; nothing depends on it).
LONG_RUNNING = {"kafka", "minio", "postgres", "consumer"}
ONE_SHOT = {"kafka-init", "setup"}
# Prometheus scrapes every 15 s (infra/observability/prometheus.yml).
SCRAPE_WAIT_S = 60


def test_every_service_healthy_in_the_documented_order(compose_up: ComposeProject) -> None:
    rows = {row["Service"]: row for row in compose_up.services()}
    assert set(rows) == LONG_RUNNING | ONE_SHOT, sorted(rows)
    for name in LONG_RUNNING:
        assert (rows[name]["State"], rows[name]["Health"]) == ("running", "healthy"), rows[name]
    for name in ONE_SHOT:
        assert (rows[name]["State"], rows[name]["ExitCode"]) == ("exited", 0), rows[name]
    # Each service starts only after the one before it is healthy / has exited 0:
    # kafka -> kafka-init -> minio -> setup -> consumer.
    times = compose_up.started_finished()
    # RFC 3339 with the same zone and precision: string order is time order.
    assert times["kafka"][0] < times["kafka-init"][0]
    assert times["kafka-init"][1] <= times["minio"][0]
    assert times["minio"][0] < times["setup"][0]
    assert times["setup"][1] <= times["consumer"][0]


def test_upload_is_indexed_and_probed(compose_up: ComposeProject) -> None:
    client = host_minio(compose_up)
    key, version_id = upload_wav(client, seconds=1.5, rate=22_050)
    compose_up.wait_done({key})
    result = probe_result(client, key, version_id)["result"]
    assert (result["sample_rate"], result["channels"]) == (22_050, 1)
    assert abs(result["duration_s"] - 1.5) < 0.01


def test_restart_keeps_the_sqlite_index(compose_up: ComposeProject) -> None:
    before = {row["key"] for row in compose_up.consumer_json("ls")}
    assert before, "the previous test left nothing indexed"
    compose_up.run("restart", "consumer", timeout_s=120)
    compose_up.wait_healthy("consumer")
    after = {row["key"] for row in compose_up.consumer_json("ls")}
    assert before <= after
    # And the restarted consumer goes on indexing where it stopped.
    key, _ = upload_wav(host_minio(compose_up), seconds=0.5, rate=16_000)
    compose_up.wait_done({key})


def test_observability_profile_prometheus_scrapes_the_consumer(
    compose_up: ComposeProject,
) -> None:
    """The one observability service with a local stand-in (Debian's Prometheus; the
    collector, Jaeger and Grafana have none here: docs/getting-started/containers.md)."""
    compose_up.run("--profile", "observability", "up", "-d", "--wait", "prometheus", timeout_s=300)
    url = f"http://127.0.0.1:{compose_up.ports['PROMETHEUS_PORT']}/api/v1/query"
    query = 'up{job="voxpersona-consumer"}'
    deadline = time.monotonic() + SCRAPE_WAIT_S
    values: list[str] = []
    while time.monotonic() < deadline:
        response = httpx.get(url, params={"query": query}, timeout=10)
        response.raise_for_status()
        values = [row["value"][1] for row in response.json()["data"]["result"]]
        if values == ["1"]:
            break
        time.sleep(2)
    assert values == ["1"], f"{query} = {values}\n{compose_up.logs_tail()}"
    # A metric the consumer itself exports, scraped through the compose network.
    response = httpx.get(url, params={"query": "consumer_events_total"}, timeout=10)
    assert response.json()["data"]["result"], "no consumer_events_total series scraped"
