"""The stack's optional observers, without starting them: Prometheus' configuration, the
token MinIO's metrics API accepts, the dashboard as a console page, where to look."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

from infra.stack.lifecycle import where_to_look
from infra.stack.prometheus import (
    ALERT_RULES,
    DASHBOARD,
    console_legend,
    console_page,
    dashboard_panels,
    minio_metrics_token,
    prometheus_config,
)
from infra.stack.state import Credentials, StackState


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_the_minio_metrics_token_is_a_jwt_signed_with_the_secret_key() -> None:
    creds = Credentials.generate()
    token = minio_metrics_token(creds, now_s=1_000_000)
    header, claims, signature = token.split(".")
    assert json.loads(_b64(header)) == {"alg": "HS512", "typ": "JWT"}
    payload = json.loads(_b64(claims))
    assert payload["sub"] == creds.minio_access_key
    assert payload["iss"] == "prometheus"
    assert payload["exp"] > 1_000_000 + 365 * 86_400
    expected = hmac.new(
        creds.minio_secret_key.encode(), f"{header}.{claims}".encode(), hashlib.sha512
    ).digest()
    assert _b64(signature) == expected
    assert creds.minio_secret_key not in token


def test_prometheus_scrapes_the_consumer_minio_and_itself_and_loads_the_alerts() -> None:
    config = json.loads(
        prometheus_config(
            consumer_port=8081,
            minio_port=9000,
            prometheus_port=9090,
            token_file=Path("/state/minio-token"),
            rules=ALERT_RULES,
        )
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["voxpersona-consumer"]["static_configs"] == [{"targets": ["127.0.0.1:8081"]}]
    assert jobs["minio"]["metrics_path"] == "/minio/v2/metrics/cluster"
    assert jobs["minio"]["authorization"] == {"credentials_file": "/state/minio-token"}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:9090"]}]
    assert config["rule_files"] == [str(ALERT_RULES)]


def test_every_dashboard_panel_becomes_a_console_graph() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(dashboard_panels(dashboard))
    page = console_page(dashboard)
    assert page.count("new PromConsole.Graph(") == len(panels)
    for panel in panels:
        for query in panel.queries:
            assert json.dumps(query) in page
    assert (
        console_legend("{{group}} {{topic}}/{{ partition }}") == "[[group]] [[topic]]/[[partition]]"
    )


def test_rows_nested_panels_are_read_and_untitled_legends_fall_back_to_the_title() -> None:
    dashboard = {
        "panels": [
            {"type": "row", "panels": [{"title": "In a row", "targets": [{"expr": "up"}]}]},
            {"title": "No query", "targets": [{"refId": "A"}]},
        ]
    }
    panels = list(dashboard_panels(dashboard))
    assert [(p.title, p.queries, p.legends) for p in panels] == [
        ("In a row", ("up",), ("In a row",))
    ]


def test_where_to_look_names_every_page() -> None:
    state = StackState(zipkin_port=9411, prometheus_port=9090, consumer_metrics_port=8081)
    lines = where_to_look(state)
    assert "traces:    http://127.0.0.1:9411/zipkin/" in lines
    assert "dashboard: http://127.0.0.1:9090/consoles/voxpersona.html" in lines
    assert "consumer /metrics: http://127.0.0.1:8081/metrics" in lines
