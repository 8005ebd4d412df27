"""Prometheus (optional, ``up --observed``): Debian's package, on 127.0.0.1, scraping the
consumer's ``/metrics`` (on the HEALTH_PORT the stack's env hands it), MinIO's cluster
metrics and itself; the project's alert rules loaded; the Grafana dashboard's panels
served as a console page (``/consoles/voxpersona.html``) for a look without Grafana."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.stack.apt import ensure_debian_package
from infra.stack.common import INFRA_DIR
from infra.stack.server import Context
from infra.stack.state import Credentials

OBSERVABILITY_DIR = INFRA_DIR / "observability"
DASHBOARD = OBSERVABILITY_DIR / "grafana" / "dashboards" / "voxpersona.json"
ALERT_RULES = OBSERVABILITY_DIR / "prometheus" / "alerts.yml"
CONSOLE_NAME = "voxpersona.html"
# Short, so a few seconds of traffic already draw a line (a developer's stack, not prod).
SCRAPE_INTERVAL_S = 2
# The console page's graphs show the last this many seconds.
GRAPH_WINDOW_S = 600
# MinIO's metrics token lives as long as the stack's credentials do.
_TOKEN_LIFETIME_S = 10 * 365 * 86_400


def minio_metrics_token(creds: Credentials, now_s: float) -> str:
    """The bearer token MinIO accepts on its metrics API (what ``mc admin prometheus
    generate`` prints): a JWT signed with the secret key. Pure."""

    def part(data: Mapping[str, Any] | bytes) -> str:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part({"alg": "HS512", "typ": "JWT"})
    claims = part(
        {"exp": int(now_s) + _TOKEN_LIFETIME_S, "sub": creds.minio_access_key, "iss": "prometheus"}
    )
    signature = hmac.new(
        creds.minio_secret_key.encode(), f"{header}.{claims}".encode(), hashlib.sha512
    ).digest()
    return f"{header}.{claims}.{part(signature)}"


def prometheus_config(
    *, consumer_port: int, minio_port: int, prometheus_port: int, token_file: Path, rules: Path
) -> str:
    """prometheus.yml of the local stack. Pure (JSON is YAML)."""
    return json.dumps(
        {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "voxpersona-consumer",
                    "static_configs": [{"targets": [f"127.0.0.1:{consumer_port}"]}],
                },
                {
                    "job_name": "minio",
                    "metrics_path": "/minio/v2/metrics/cluster",
                    "authorization": {"credentials_file": str(token_file)},
                    "static_configs": [{"targets": [f"127.0.0.1:{minio_port}"]}],
                },
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{prometheus_port}"]}],
                },
            ],
        },
        indent=2,
    )


@dataclass(frozen=True)
class Panel:
    """A dashboard panel's title, its PromQL queries and their legends (Grafana's)."""

    title: str
    queries: tuple[str, ...]
    legends: tuple[str, ...]


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[Panel]:
    """Every panel with queries, rows' nested panels included. Pure."""
    for panel in dashboard.get("panels", []):
        yield from dashboard_panels(panel)
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        if targets:
            yield Panel(
                panel.get("title", ""),
                tuple(t["expr"] for t in targets),
                tuple(t.get("legendFormat") or panel.get("title", "") for t in targets),
            )


def console_legend(legend: str) -> str:
    """Grafana's ``{{label}}`` as the console graphs' ``[[label]]``. Pure."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", r"[[\1]]", legend)


def console_page(dashboard: Mapping[str, Any]) -> str:
    """A Prometheus console template drawing every panel of the Grafana dashboard with
    Prometheus' own console graphs (the classic UI's rickshaw). Pure."""
    static = "{{ pathPrefix }}/classic/static"
    head = [
        f'<link rel="stylesheet" href="{static}/rickshaw/rickshaw.min.css">',
        f'<link rel="stylesheet" href="{static}/bootstrap4/css/bootstrap.min.css">',
        f'<link rel="stylesheet" href="{static}/css/prom_console.css">',
        *(
            f'<script src="{static}/{js}"></script>'
            for js in (
                "d3/d3.min.js",
                "rickshaw/rickshaw.min.js",
                "jquery/jquery.min.js",
            )
        ),
        '<script>var PATH_PREFIX = "{{ pathPrefix }}";</script>',
        f'<script src="{static}/js/prom_console.js"></script>',
    ]
    body = []
    for number, panel in enumerate(dashboard_panels(dashboard)):
        options = {
            "expr": list(panel.queries),
            "name": [console_legend(legend) for legend in panel.legends],
            "duration": GRAPH_WINDOW_S,
            "height": 140,
            "width": 520,
        }
        body.append(
            f'<div class="panel"><h4>{html.escape(panel.title)}</h4>'
            f'<div id="panel{number}"></div><script>new PromConsole.Graph(Object.assign('
            f"{{node: document.querySelector('#panel{number}')}}, {json.dumps(options)}))"
            "</script></div>"
        )
    title = html.escape(dashboard.get("title", "dashboard"))
    return (
        f"<!doctype html><html><head><title>{title}</title>{''.join(head)}"
        "<style>.panel{display:inline-block;vertical-align:top;margin:6px 10px;width:560px}"
        "h4{font-size:14px;margin:4px 0}</style></head>"
        f"<body><h3 style='margin:8px 10px'>{title}</h3>{''.join(body)}</body></html>\n"
    )


def prometheus_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Prometheus:
    name = "prometheus"
    ports = ("prometheus_port", "consumer_metrics_port")
    data_ports = ()
    others_wait = False
    stop_signal = signal.SIGTERM

    def install(self) -> Path:
        return Path(ensure_debian_package("prometheus", "prometheus"))

    def start(self, ctx: Context, installed: Path) -> None:
        state = ctx.state
        home = ctx.state_dir / "prometheus"
        consoles = home / "consoles"
        consoles.mkdir(parents=True, exist_ok=True)
        token = home / "minio-token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(minio_metrics_token(ctx.credentials, time.time()))
        config = home / "prometheus.yml"
        config.write_text(
            prometheus_config(
                consumer_port=state.consumer_metrics_port,
                minio_port=state.minio_port,
                prometheus_port=state.prometheus_port,
                token_file=token,
                rules=ALERT_RULES,
            )
        )
        dashboard = json.loads(DASHBOARD.read_text())
        (consoles / CONSOLE_NAME).write_text(console_page(dashboard))
        ctx.spawn(
            self.name,
            [
                str(installed),
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{state.prometheus_port}",
                f"--web.console.templates={consoles}",
                f"--web.console.libraries={consoles}",
                "--storage.tsdb.retention.time=2d",
                "--log.level=warn",
            ],
            dict(os.environ),
        )

    def ready(self, ctx: Context) -> bool:
        return prometheus_ready(ctx.state.prometheus_port)

    def after_ready(self, ctx: Context) -> None:
        return None

    def env(self, ctx: Context) -> dict[str, str]:
        # The consumer serves /metrics where this Prometheus scrapes it.
        return {"HEALTH_PORT": str(ctx.state.consumer_metrics_port)}
