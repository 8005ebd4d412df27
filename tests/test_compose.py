"""Static checks of docker-compose.yml, Dockerfile and .dockerignore (no Docker needed).

The compose file is parsed with ``yaml.safe_load`` and interpolated the way compose does
(``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``) against a fake environment,
then checked against the consumer's own contract: ``consumer.settings.Settings`` (every env
alias), ``minio-notify.json`` (the notify target id) and the Dockerfile's ENTRYPOINT.

The ``observability`` profile (otel-collector, jaeger, prometheus, grafana) is checked the
same way, with its configuration under infra/observability/: the collector's pipelines, the
Prometheus scrape of the consumer's /metrics, Grafana's provisioning and the dashboard's
metric names against the set the consumer exports. When a ``docker compose`` binary is
installed, ``docker compose config`` validates the whole file as well.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "infra" / "compose.env.example"
NOTIFY_FILE = ROOT / "minio-notify.json"
OBSERVABILITY_DIR = ROOT / "infra" / "observability"
COLLECTOR_CONFIG = OBSERVABILITY_DIR / "otel-collector.yaml"
PROMETHEUS_CONFIG = OBSERVABILITY_DIR / "prometheus.yml"
ALERT_RULES = OBSERVABILITY_DIR / "prometheus" / "alerts.yml"
GRAFANA_DIR = OBSERVABILITY_DIR / "grafana"
GRAFANA_DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml"
GRAFANA_DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "voxpersona.json"

# The services that run `python -m consumer …` and therefore need its settings.
CONSUMER_SERVICES = ("setup", "consumer")
LONG_RUNNING = ("kafka", "minio", "postgres", "consumer")
# Settings with a default that only works on a developer's machine (127.0.0.1, empty
# credentials, a relative SQLite file): compose must give them real values.
CONNECTION_SETTINGS = frozenset(
    {
        "MINIO_ENDPOINT",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "KAFKA_BOOTSTRAP_SERVERS",
        "INDEX_URL",
    }
)
# Read by the OpenTelemetry SDK itself, not by Settings (design.md: "standard OTEL_*").
FOREIGN_ENV_PREFIXES = ("OTEL_",)

BASE_ENV = {
    "MINIO_ACCESS_KEY": "test-access",
    "MINIO_SECRET_KEY": "test-secret-0123456789",
    "POSTGRES_PASSWORD": "test-postgres-password",
}
OVERRIDE_ENV = {
    **BASE_ENV,
    "KAFKA_EVENTS_TOPIC": "custom-events",
    "KAFKA_DLQ_TOPIC": "custom-events-dlq",
    "KAFKA_GROUP_ID": "custom-group",
    "KAFKA_EVENTS_PARTITIONS": "6",
}
SECRET_NAME = re.compile(r"(SECRET_KEY|PASSWORD)$")
REQUIRED_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")
NOTIFY_VAR = re.compile(r"^MINIO_NOTIFY_KAFKA_(?P<field>[A-Z]+(?:_[A-Z]+)*?)_(?P<id>[A-Za-z0-9]+)$")
NOTIFY_FIELDS = ("ENABLE", "BROKERS", "TOPIC", "QUEUE_DIR", "QUEUE_LIMIT", "VERSION")

OBSERVABILITY_PROFILE = "observability"
# Service -> the image repository it must run (with a pinned version tag).
OBSERVABILITY_IMAGES = {
    "otel-collector": "otel/opentelemetry-collector-contrib",
    "jaeger": "jaegertracing/all-in-one",
    "prometheus": "prom/prometheus",
    "grafana": "grafana/grafana",
}
OBSERVABILITY_SERVICES = tuple(OBSERVABILITY_IMAGES)
# The Prometheus names of the metrics the consumer exports (OpenTelemetry instrument names
# as the Prometheus exporter writes them: dots -> underscores, `_total` on counters, the
# unit on seconds/bytes). The dashboard may use these and only these, and uses every one.
DOCUMENTED_METRICS = frozenset(
    {
        "consumer_events_total",
        "consumer_lag",
        "consumer_dead_letters_total",
        "index_delay_seconds",
        "index_delay_minio_seconds",
        "index_delay_consumer_seconds",
        "minio_notify_queue_length",
        "minio_notify_failed_events",
        "minio_notify_total_events",
        "minio_notify_delivery_rate_per_second",
        "reconcile_auto_runs_total",
        "reconcile_auto_repairs_total",
        "index_batch_duration_seconds",
        "index_objects",
        "index_size_bytes",
        "processing_jobs_total",
        "processing_duration_seconds",
        "minio_operations_total",
        "minio_operation_duration_seconds",
        "retention_objects_expired_total",
        "retention_expired_bytes_total",
        "retention_objects_skipped_total",
        "retention_sweeps_total",
    }
)
METRIC_NAME = re.compile(r"\b(?:consumer|index|processing|minio|retention|reconcile)_[a-z_]+")
HISTOGRAM_SERIES_SUFFIX = re.compile(r"_(?:bucket|count|sum)$")
DASHBOARD_ROWS = ("Throughput & lag", "Delay", "Processing", "DLQ", "Storage & retention", "MinIO")


# --- compose interpolation -----------------------------------------------------------------


class MissingVariableError(Exception):
    """A ``${VAR:?message}`` whose variable is unset: compose refuses to start."""


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match.group("escaped"):
        return "$"
    name = match.group("name") or match.group("bare")
    op, arg = match.group("op"), match.group("arg") or ""
    value = env.get(name)
    present = value is not None and (value != "" or not (op or "").startswith(":"))
    if op is None:
        return value or ""
    if op.endswith("-"):
        return value if present and value is not None else arg
    if op.endswith("?"):
        if not present or value is None:
            raise MissingVariableError(f"{name}: {arg}")
        return value
    return arg if present else ""  # "+": the replacement when set


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation of every string value (keys are left alone, as compose does)."""
    if isinstance(node, str):
        return _INTERPOLATION.sub(lambda m: _substitute(m, env), node)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


# --- helpers -------------------------------------------------------------------------------


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(raw, dict), f"{COMPOSE_FILE.name} is not a YAML mapping"
    return raw if env is None else interpolate(raw, env)


def service(compose: Mapping[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r} (has: {sorted(services)})"
    return services[name]


def environment(svc: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either the mapping or the list form."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def settings_aliases() -> dict[str, bool]:
    """Every Settings env name, mapped to whether the field is required (has no default)."""
    return {
        (field.alias or name).upper(): field.is_required()
        for name, field in Settings.model_fields.items()
    }


def mounts(svc: Mapping[str, Any]) -> dict[str, str]:
    """Mount target -> source, from the short ("src:dst[:mode]") or the long syntax."""
    result: dict[str, str] = {}
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            result[volume["target"]] = volume.get("source", "")
        else:
            parts = volume.split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
            result[target] = source
    return result


def host_ips(svc: Mapping[str, Any]) -> Iterator[tuple[Any, str | None]]:
    """(port spec, host ip or None when it binds every interface) for each published port."""
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            yield port, port.get("host_ip")
            continue
        parts = str(port).split(":")
        yield port, parts[0] if len(parts) == 3 else None


def mount_specs(svc: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every mount, short or long syntax."""
    specs: list[tuple[str, str, bool]] = []
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            specs.append(
                (volume.get("source", ""), volume["target"], bool(volume.get("read_only")))
            )
            continue
        parts = volume.split(":")
        if len(parts) == 1:
            specs.append(("", parts[0], False))
        else:
            modes = parts[2].split(",") if len(parts) > 2 else []
            specs.append((parts[0], parts[1], "ro" in modes))
    return specs


def dependencies(svc: Mapping[str, Any]) -> set[str]:
    """Every service this one needs: depends_on (list or mapping), links, volumes_from and
    network_mode/pid/ipc ``service:<name>``."""
    names = set(svc.get("depends_on") or [])
    names |= {link.split(":", 1)[0] for link in svc.get("links") or []}
    names |= {
        source.removeprefix("service:").split(":", 1)[0] for source in svc.get("volumes_from") or []
    }
    for key in ("network_mode", "pid", "ipc"):
        value = str(svc.get(key) or "")
        if value.startswith("service:"):
            names.add(value.removeprefix("service:"))
    return names


def profiles(svc: Mapping[str, Any]) -> list[str]:
    return list(svc.get("profiles") or [])


def image_tag(image: str) -> str:
    """The tag of ``repo[:tag][@digest]`` ("" when there is none)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def load_yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        pytest.fail(f"{path.relative_to(ROOT)} is not valid YAML: {error}")


def component_type(component_id: str) -> str:
    """The type of a collector component id ``type[/name]``."""
    return component_id.split("/", 1)[0]


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def published_container_ports(svc: Mapping[str, Any]) -> set[int]:
    ports: set[int] = set()
    for port in svc.get("ports") or []:
        target = port["target"] if isinstance(port, dict) else str(port).split(":")[-1]
        ports.add(int(str(target).split("/", 1)[0]))
    return ports


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded into collapsed rows."""
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels") or [])


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression uses, histogram series folded into their metric."""
    return {HISTOGRAM_SERIES_SUFFIX.sub("", name) for name in METRIC_NAME.findall(expr)}


def command_argv(svc: Mapping[str, Any]) -> list[str]:
    command = svc.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def notify_target() -> tuple[str, str]:
    config = json.loads(NOTIFY_FILE.read_text(encoding="utf-8"))
    target_id, arn = config["target"]["id"], config["target"]["arn"]
    match = re.fullmatch(r"arn:minio:sqs:[^:]*:(?P<id>[^:]+):kafka", arn)
    assert match, f"minio-notify.json target.arn {arn!r} is not arn:minio:sqs::<ID>:kafka"
    assert match.group("id") == target_id, (
        f"target.arn names {match.group('id')!r}, id {target_id!r}"
    )
    return target_id, arn


def notify_vars(minio_env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """MINIO_NOTIFY_KAFKA_<FIELD>_<ID> variables grouped as {id: {field: value}}."""
    targets: dict[str, dict[str, str]] = {}
    for key, value in minio_env.items():
        if not key.startswith("MINIO_NOTIFY_KAFKA_"):
            continue
        match = NOTIFY_VAR.match(key)
        assert match, f"minio: cannot parse notify variable {key}"
        field = next((f for f in NOTIFY_FIELDS if key.startswith(f"MINIO_NOTIFY_KAFKA_{f}_")), None)
        assert field, f"minio: unknown notify variable {key} (known fields: {NOTIFY_FIELDS})"
        target_id = key.removeprefix(f"MINIO_NOTIFY_KAFKA_{field}_")
        targets.setdefault(target_id, {})[field] = value
    return targets


def hosts_of(servers: str) -> set[str]:
    return {part.strip().rsplit(":", 1)[0] for part in servers.split(",") if part.strip()}


# --- Dockerfile parsing --------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def exec_form(args: str, instruction: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"Dockerfile {instruction} must use the exec (JSON list) form, got: {args}")
    assert isinstance(value, list), f"Dockerfile {instruction} is not a JSON list: {args}"
    return [str(part) for part in value]


def dockerfile_entrypoint() -> list[str]:
    final = dockerfile_stages()[-1]
    entrypoints = [args for keyword, args in final if keyword == "ENTRYPOINT"]
    assert entrypoints, "Dockerfile: the final stage has no ENTRYPOINT"
    return exec_form(entrypoints[-1], "ENTRYPOINT")


def dockerignored(path: str) -> bool:
    """Whether .dockerignore excludes ``path`` (or a parent directory of it)."""
    ignored = False
    candidates = [str(PurePosixPath(*PurePosixPath(path).parts[:n])) for n in range(1, 99)]
    candidates = list(dict.fromkeys(c for c in candidates if c != "."))
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/").replace("**/", "*").replace("**", "*")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            ignored = not negate
    return ignored


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(BASE_ENV)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return load_compose()


# --- compose: shape ------------------------------------------------------------------------


def test_compose_uses_the_spec_format_and_has_every_service(raw_compose: dict[str, Any]) -> None:
    assert "version" not in raw_compose, "drop the obsolete top-level `version:` key"
    for name in ("kafka", "kafka-init", "minio", "postgres", "setup", "consumer"):
        service(raw_compose, name)


def test_interpolation_leaves_nothing_unresolved(compose: dict[str, Any]) -> None:
    leftovers = re.findall(r"\$\{[^}]*\}?", json.dumps(compose))
    assert not leftovers, (
        f"unsupported (nested?) interpolation left in docker-compose.yml: {leftovers}"
    )


def test_secrets_are_required_from_the_environment() -> None:
    for name in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "POSTGRES_PASSWORD"):
        env = {key: value for key, value in BASE_ENV.items() if key != name}
        with pytest.raises(MissingVariableError, match=name):
            load_compose(env)


# --- compose: the consumer's settings ------------------------------------------------------


@pytest.mark.parametrize("name", CONSUMER_SERVICES)
def test_every_required_setting_is_provided(compose: dict[str, Any], name: str) -> None:
    aliases = settings_aliases()
    assert aliases.keys() >= CONNECTION_SETTINGS, (
        f"Settings no longer has {sorted(CONNECTION_SETTINGS - aliases.keys())}: update this test"
    )
    required = {
        alias for alias, is_required in aliases.items() if is_required
    } | CONNECTION_SETTINGS
    env = environment(service(compose, name))
    missing = sorted(alias for alias in required if not env.get(alias))
    assert not missing, f"service {name!r} lacks required consumer settings: {missing}"


@pytest.mark.parametrize("name", CONSUMER_SERVICES)
def test_every_env_name_is_a_settings_alias(raw_compose: dict[str, Any], name: str) -> None:
    aliases = settings_aliases()
    env = environment(service(raw_compose, name))
    unknown = sorted(
        key for key in env if key not in aliases and not key.startswith(FOREIGN_ENV_PREFIXES)
    )
    assert not unknown, (
        f"service {name!r} sets env vars that are not Settings aliases (typo?): {unknown}; "
        f"known: {sorted(aliases)}"
    )


@pytest.mark.parametrize("name", CONSUMER_SERVICES)
def test_env_values_are_valid_settings(compose: dict[str, Any], name: str) -> None:
    env = environment(service(compose, name))
    settings = Settings.model_validate({k: v for k, v in env.items() if not k.startswith("OTEL_")})
    services = set(compose["services"])
    minio_host = settings.minio_endpoint.rsplit(":", 1)[0]
    assert minio_host in services, f"{name}: MINIO_ENDPOINT host {minio_host!r} is no service"
    assert hosts_of(settings.kafka_bootstrap_servers) <= services, (
        f"{name}: KAFKA_BOOTSTRAP_SERVERS {settings.kafka_bootstrap_servers!r} names no service"
    )
    assert settings.health_host == "0.0.0.0", f"{name}: HEALTH_HOST must be 0.0.0.0 in a container"
    sqlite = re.fullmatch(r"sqlite:///(?P<path>/.+)", settings.index_url)
    if sqlite:
        parent = str(PurePosixPath(sqlite.group("path")).parent)
        assert parent in mounts(service(compose, name)), (
            f"{name}: the SQLite index {sqlite.group('path')} is not on a volume (mount {parent})"
        )


def test_consumer_health_port_is_published_and_probed(compose: dict[str, Any]) -> None:
    consumer = service(compose, "consumer")
    port = environment(consumer)["HEALTH_PORT"]
    container_ports = [
        str(p["target"]) if isinstance(p, dict) else str(p).split(":")[-1]
        for p in consumer.get("ports") or []
    ]
    assert port in container_ports, (
        f"consumer: HEALTH_PORT {port} is not published ({container_ports})"
    )
    probe = " ".join(command_argv({"command": consumer["healthcheck"]["test"]}))
    assert f"127.0.0.1:{port}/healthz" in probe, (
        f"consumer healthcheck does not hit /healthz: {probe}"
    )


# --- compose: MinIO's Kafka target ---------------------------------------------------------


def test_minio_notify_target_id_matches_notify_json(compose: dict[str, Any]) -> None:
    target_id, arn = notify_target()
    targets = notify_vars(environment(service(compose, "minio")))
    assert set(targets) == {target_id}, (
        f"minio notify variables use target id(s) {sorted(targets)}, minio-notify.json has "
        f"target.id {target_id!r} (ARN {arn})"
    )
    target = targets[target_id]
    missing = sorted({"ENABLE", "BROKERS", "TOPIC", "QUEUE_DIR", "QUEUE_LIMIT"} - target.keys())
    assert not missing, f"minio: MINIO_NOTIFY_KAFKA_<FIELD>_{target_id} missing for {missing}"
    assert target["ENABLE"].lower() == "on", "minio: the Kafka notify target is not enabled"
    assert hosts_of(target["BROKERS"]) <= set(compose["services"]), (
        f"minio: notify brokers {target['BROKERS']!r} are not compose services"
    )
    assert int(target["QUEUE_LIMIT"]) > 0


def test_minio_sends_events_synchronously(compose: dict[str, Any]) -> None:
    value = environment(service(compose, "minio")).get("MINIO_API_SYNC_EVENTS", "")
    assert value.lower() == "on", f"minio: MINIO_API_SYNC_EVENTS must be 'on', is {value!r}"


def test_minio_queue_dir_is_an_absolute_path_on_a_volume(compose: dict[str, Any]) -> None:
    target_id, _ = notify_target()
    minio = service(compose, "minio")
    queue_dir = notify_vars(environment(minio))[target_id].get("QUEUE_DIR", "")
    assert queue_dir.startswith("/"), f"minio: QUEUE_DIR must be an absolute path, is {queue_dir!r}"
    source = mounts(minio).get(queue_dir)
    assert source, f"minio: QUEUE_DIR {queue_dir} is not a mount, events die with the container"
    named = source in (compose.get("volumes") or {})
    assert named or source.startswith(("/", ".")), f"minio: volume {source!r} is not declared"


@pytest.mark.parametrize("env", [BASE_ENV, OVERRIDE_ENV], ids=["defaults", "overridden"])
def test_minio_topic_is_the_consumer_topic(env: Mapping[str, str]) -> None:
    compose = load_compose(env)
    target_id, _ = notify_target()
    topic = notify_vars(environment(service(compose, "minio")))[target_id]["TOPIC"]
    for name in CONSUMER_SERVICES:
        consumer_topic = environment(service(compose, name))["KAFKA_EVENTS_TOPIC"]
        assert topic == consumer_topic, (
            f"MinIO publishes to {topic!r} but {name} reads KAFKA_EVENTS_TOPIC={consumer_topic!r}"
        )


@pytest.mark.parametrize("env", [BASE_ENV, OVERRIDE_ENV], ids=["defaults", "overridden"])
def test_kafka_init_creates_the_topics_before_minio_starts(env: Mapping[str, str]) -> None:
    compose = load_compose(env)
    script = " ".join(command_argv(service(compose, "kafka-init")))
    consumer_env = environment(service(compose, "consumer"))
    for key in ("KAFKA_EVENTS_TOPIC", "KAFKA_DLQ_TOPIC"):
        assert re.search(rf"(?<![\w.-]){re.escape(consumer_env[key])}(?![\w.-])", script), (
            f"kafka-init does not create {key}={consumer_env[key]!r}"
        )
    assert "kafka-topics.sh" in script, "kafka-init must use kafka-topics.sh"
    assert "--if-not-exists" in script, "kafka-init must be idempotent (--if-not-exists)"
    partitions = consumer_env.get("KAFKA_EVENTS_PARTITIONS", "4")
    assert f"--partitions {partitions}" in script, f"kafka-init: expected --partitions {partitions}"
    depends = service(compose, "minio").get("depends_on") or {}
    condition = (
        (depends.get("kafka-init") or {}).get("condition") if isinstance(depends, dict) else None
    )
    assert condition == "service_completed_successfully", (
        "minio must depend on kafka-init with condition service_completed_successfully"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("setup", {"minio": "service_healthy", "kafka-init": "service_completed_successfully"}),
        ("consumer", {"setup": "service_completed_successfully"}),
        ("kafka-init", {"kafka": "service_healthy"}),
    ],
)
def test_start_order(compose: dict[str, Any], name: str, expected: dict[str, str]) -> None:
    depends = service(compose, name).get("depends_on") or {}
    assert isinstance(depends, dict), f"{name}: use the long depends_on form with conditions"
    for dependency, condition in expected.items():
        actual = (depends.get(dependency) or {}).get("condition")
        assert actual == condition, (
            f"{name} must depend on {dependency} ({condition}), has {actual}"
        )


# --- compose: hygiene ----------------------------------------------------------------------


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck(compose: dict[str, Any], name: str) -> None:
    healthcheck = service(compose, name).get("healthcheck") or {}
    assert healthcheck.get("test"), f"{name} has no healthcheck"
    assert not healthcheck.get("disable"), f"{name}: healthcheck is disabled"
    assert healthcheck["test"] not in (["NONE"], "NONE"), f"{name}: healthcheck is disabled"


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port, host_ip in host_ips(svc):
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} must be published on 127.0.0.1"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, f"{name}: neither image nor build"
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last, f"{name}: image {image!r} has no tag (pin a version)"
        tag = last.split(":", 1)[1]
        assert tag, f"{name}: image {image!r} has an empty tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned (no :latest)"


def test_no_secret_literals(raw_compose: dict[str, Any]) -> None:
    blocks: dict[str, Any] = {
        f"service {name}": svc.get("environment") for name, svc in raw_compose["services"].items()
    }
    blocks.update({key: value for key, value in raw_compose.items() if key.startswith("x-")})
    for where, block in blocks.items():
        if not isinstance(block, (dict, list)):
            continue
        for key, value in environment({"environment": block}).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_REFERENCE.fullmatch(value), (
                    f"{where}: {key} must be a required ${{VAR:?message}} reference, "
                    f"not a literal or a default: {value!r}"
                )


def test_env_example_lists_every_required_variable() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    required = {match.group("name") for match in REQUIRED_REFERENCE.finditer(text)}
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    missing = sorted(required - example.keys())
    assert not missing, f"{ENV_EXAMPLE.relative_to(ROOT)} lacks {missing}"
    for name in required:
        if SECRET_NAME.search(name):
            assert "change-me" in example[name], f"{name}: use a change-me placeholder, not a value"


@pytest.mark.parametrize(("name", "verb"), [("setup", "setup"), ("consumer", "run")])
def test_services_run_the_consumer_cli(compose: dict[str, Any], name: str, verb: str) -> None:
    svc = service(compose, name)
    assert "build" in svc, f"{name} must be built from the Dockerfile"
    entrypoint = svc.get("entrypoint", dockerfile_entrypoint())
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
    argv = entrypoint + command_argv(svc)
    assert argv[:4] == ["python", "-m", "consumer", verb], (
        f"{name} would run {argv} (image ENTRYPOINT {dockerfile_entrypoint()} + compose "
        f"entrypoint/command); expected python -m consumer {verb} …"
    )


# --- compose: observability profile -------------------------------------------------------


@pytest.fixture(scope="module")
def collector_config() -> dict[str, Any]:
    config = load_yaml(COLLECTOR_CONFIG)
    assert isinstance(config, dict), f"{COLLECTOR_CONFIG.name} is not a YAML mapping"
    return config


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    assert DASHBOARD_FILE.is_file(), f"{DASHBOARD_FILE.relative_to(ROOT)} is missing"
    try:
        board = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        pytest.fail(f"{DASHBOARD_FILE.relative_to(ROOT)} is not valid JSON: {error}")
    assert isinstance(board, dict), f"{DASHBOARD_FILE.name} is not a JSON object"
    return board


@pytest.mark.parametrize("name", OBSERVABILITY_SERVICES)
def test_observability_services_are_only_in_their_profile(
    raw_compose: dict[str, Any], name: str
) -> None:
    svc = service(raw_compose, name)
    assert profiles(svc) == [OBSERVABILITY_PROFILE], (
        f"{name} must have `profiles: [{OBSERVABILITY_PROFILE}]` (so a plain `docker compose "
        f"up` does not start it), has {profiles(svc)}"
    )


def test_default_services_do_not_need_the_observability_profile(
    raw_compose: dict[str, Any],
) -> None:
    for name, svc in raw_compose["services"].items():
        if name in OBSERVABILITY_SERVICES:
            needed = dependencies(svc) - set(raw_compose["services"])
            assert not needed, f"{name} depends on unknown services {sorted(needed)}"
            continue
        assert not profiles(svc), (
            f"{name} has profiles {profiles(svc)}: only the observability services have one"
        )
        needed = sorted(dependencies(svc) & set(OBSERVABILITY_SERVICES))
        assert not needed, (
            f"{name} (no profile) depends on {needed}: `docker compose up` without "
            f"--profile {OBSERVABILITY_PROFILE} would fail or start them"
        )


@pytest.mark.parametrize(("name", "repository"), sorted(OBSERVABILITY_IMAGES.items()))
def test_observability_images_are_pinned(
    compose: dict[str, Any], name: str, repository: str
) -> None:
    image = service(compose, name).get("image", "")
    assert image.split("@", 1)[0].rsplit(":", 1)[0] == repository, (
        f"{name}: expected image {repository}:<version>, has {image!r}"
    )
    tag = image_tag(image)
    assert tag, f"{name}: image {image!r} has no tag (pin a version)"
    assert tag != "latest", f"{name}: image {image!r} is not pinned (no :latest)"
    assert re.search(r"\d+\.\d+", tag) or "@sha256:" in image, (
        f"{name}: image tag {tag!r} is not a version"
    )


def test_observability_mounts_exist_and_are_read_only(compose: dict[str, Any]) -> None:
    prefix = "./infra/observability"
    mounted: list[Path] = []
    for name, svc in compose["services"].items():
        for source, target, read_only in mount_specs(svc):
            if not (source == prefix or source.startswith(prefix + "/")):
                continue
            path = ROOT / source
            assert path.exists(), f"{name} mounts {source} ({target}), which does not exist"
            assert read_only, f"{name}: mount {source}:{target} should be read-only (:ro)"
            mounted.append(path.resolve())
    config_files = (
        COLLECTOR_CONFIG,
        PROMETHEUS_CONFIG,
        ALERT_RULES,
        GRAFANA_DATASOURCES,
        GRAFANA_DASHBOARD_PROVIDERS,
        DASHBOARD_FILE,
    )
    for config in config_files:
        resolved = config.resolve()
        assert any(resolved == m or m in resolved.parents for m in mounted), (
            f"{config.relative_to(ROOT)} is mounted by no service"
        )


def test_consumer_sends_traces_to_the_collector(compose: dict[str, Any]) -> None:
    env = environment(service(compose, "consumer"))
    assert env.get("OTEL_SERVICE_NAME") == "voxpersona-consumer"
    assert env.get("OTEL_TRACES_EXPORTER") == "otlp"
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    match = re.fullmatch(r"http://(?P<host>[\w.-]+):(?P<port>\d+)/?", endpoint)
    assert match, f"consumer: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint!r} is not http://host:port"
    assert match.group("host") == "otel-collector", f"consumer: OTLP goes to {endpoint}"
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    expected_port = {"grpc": "4317"}.get(protocol, "4318")
    assert match.group("port") == expected_port, (
        f"consumer: OTEL_EXPORTER_OTLP_PROTOCOL={protocol} needs port {expected_port}"
    )


def test_collector_pipelines_use_defined_components(collector_config: dict[str, Any]) -> None:
    pipelines = (collector_config.get("service") or {}).get("pipelines") or {}
    assert "traces" in pipelines, f"{COLLECTOR_CONFIG.name}: no traces pipeline"
    for pipeline_id, pipeline in pipelines.items():
        assert pipeline.get("receivers"), f"pipeline {pipeline_id} has no receivers"
        assert pipeline.get("exporters"), f"pipeline {pipeline_id} has no exporters"
        for kind in ("receivers", "processors", "exporters"):
            defined = collector_config.get(kind) or {}
            undefined = sorted(set(pipeline.get(kind) or []) - set(defined))
            assert not undefined, (
                f"{COLLECTOR_CONFIG.name}: pipeline {pipeline_id} uses undefined {kind} "
                f"{undefined} (defined: {sorted(defined)})"
            )
        processors = [component_type(p) for p in pipeline.get("processors") or []]
        assert "batch" in processors, f"pipeline {pipeline_id} does not batch"
        if "memory_limiter" in processors:
            assert processors[0] == "memory_limiter", (
                f"pipeline {pipeline_id}: memory_limiter must be the first processor"
            )
    extensions = (collector_config.get("service") or {}).get("extensions") or []
    undefined = sorted(set(extensions) - set(collector_config.get("extensions") or {}))
    assert not undefined, f"{COLLECTOR_CONFIG.name}: undefined extensions {undefined}"


def test_collector_receives_otlp_on_the_published_ports(
    collector_config: dict[str, Any], compose: dict[str, Any]
) -> None:
    protocols = ((collector_config.get("receivers") or {}).get("otlp") or {}).get("protocols")
    assert protocols, f"{COLLECTOR_CONFIG.name}: no otlp receiver"
    published = published_container_ports(service(compose, "otel-collector"))
    for protocol, port in (("grpc", 4317), ("http", 4318)):
        endpoint = (protocols.get(protocol) or {}).get("endpoint", "")
        assert endpoint == f"0.0.0.0:{port}", (
            f"otlp {protocol} receiver must listen on 0.0.0.0:{port} (reachable from other "
            f"containers), has {endpoint!r}"
        )
        assert port in published, f"otel-collector does not publish {port}"


def test_collector_exports_traces_to_jaeger(
    collector_config: dict[str, Any], compose: dict[str, Any]
) -> None:
    exporters = collector_config.get("exporters") or {}
    traces = collector_config["service"]["pipelines"]["traces"]["exporters"]
    jaeger = [
        exporters[e] or {}
        for e in traces
        if component_type(e) == "otlp" and (exporters[e] or {}).get("endpoint") == "jaeger:4317"
    ]
    assert jaeger, f"traces pipeline exports to no otlp exporter at jaeger:4317 ({traces})"
    assert (jaeger[0].get("tls") or {}).get("insecure") is True, (
        "the Jaeger otlp exporter needs tls.insecure: true (plain gRPC inside compose)"
    )
    debug = [e for e in traces if component_type(e) == "debug"]
    assert debug, "traces pipeline has no debug exporter"
    verbosity = (exporters[debug[0]] or {}).get("verbosity")
    assert verbosity == "basic", f"debug exporter verbosity is {verbosity!r}, expected basic"
    assert environment(service(compose, "jaeger")).get("COLLECTOR_OTLP_ENABLED") == "true"


def test_prometheus_scrapes_the_consumer_metrics(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert isinstance(config, dict), f"{PROMETHEUS_CONFIG.name} is not a YAML mapping"
    jobs = {job["job_name"]: job for job in config.get("scrape_configs") or []}
    assert "voxpersona-consumer" in jobs, f"no voxpersona-consumer scrape job ({sorted(jobs)})"
    job = jobs["voxpersona-consumer"]
    interval = job.get("scrape_interval", (config.get("global") or {}).get("scrape_interval"))
    assert interval == "15s", f"voxpersona-consumer scrape_interval is {interval!r}"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in job.get("static_configs") or [] for t in group.get("targets") or []}
    port = environment(service(compose, "consumer"))["HEALTH_PORT"]
    assert f"consumer:{port}" in targets, (
        f"voxpersona-consumer must scrape consumer:{port} (HEALTH_PORT), has {sorted(targets)}"
    )
    services = set(compose["services"])
    for name, other in jobs.items():
        for group in other.get("static_configs") or []:
            for target in group.get("targets") or []:
                host = target.rsplit(":", 1)[0]
                assert host in services | {"localhost"}, (
                    f"scrape job {name}: target {target} is no compose service"
                )


def test_grafana_datasources_are_provisioned(compose: dict[str, Any]) -> None:
    config = load_yaml(GRAFANA_DATASOURCES)
    path_name = GRAFANA_DATASOURCES.name
    assert isinstance(config, dict), f"{path_name} is not a YAML mapping"
    assert config.get("apiVersion") == 1, f"{path_name}: apiVersion must be 1"
    sources = {source["uid"]: source for source in config.get("datasources") or []}
    expected = {
        "prometheus": ("prometheus", "http://prometheus:9090"),
        "jaeger": ("jaeger", "http://jaeger:16686"),
    }
    for uid, (kind, url) in expected.items():
        assert uid in sources, f"no data source with uid {uid!r} ({sorted(sources)})"
        assert (sources[uid]["type"], sources[uid]["url"]) == (kind, url), sources[uid]
        host = url.split("//", 1)[1].rsplit(":", 1)[0]
        assert host in compose["services"], f"data source {uid}: {host} is no compose service"
    defaults = [uid for uid, source in sources.items() if source.get("isDefault")]
    assert defaults == ["prometheus"], f"Prometheus must be the only default, defaults: {defaults}"


def test_grafana_loads_the_dashboard(compose: dict[str, Any]) -> None:
    config = load_yaml(GRAFANA_DASHBOARD_PROVIDERS)
    path_name = GRAFANA_DASHBOARD_PROVIDERS.name
    assert isinstance(config, dict), f"{path_name} is not a YAML mapping"
    assert config.get("apiVersion") == 1, f"{path_name}: apiVersion must be 1"
    paths = [
        (provider.get("options") or {}).get("path")
        for provider in config.get("providers") or []
        if provider.get("type", "file") == "file"
    ]
    assert "/var/lib/grafana/dashboards" in paths, f"no file provider for it ({paths})"
    targets = {target: source for source, target, _ in mount_specs(service(compose, "grafana"))}
    provisioning = "./infra/observability/grafana/provisioning"
    for kind in ("datasources", "dashboards"):
        source = targets.get(f"/etc/grafana/provisioning/{kind}") or targets.get(
            "/etc/grafana/provisioning", ""
        )
        assert source.startswith(provisioning), f"grafana: {kind} provisioning is not mounted"
    dashboard_mounts = [
        source
        for target, source in targets.items()
        if PurePosixPath(target).is_relative_to("/var/lib/grafana/dashboards")
    ]
    assert any(
        (ROOT / source).resolve() in (DASHBOARD_FILE.resolve(), DASHBOARD_FILE.parent.resolve())
        for source in dashboard_mounts
    ), f"grafana does not mount {DASHBOARD_FILE.relative_to(ROOT)} under the provider path"
    env = environment(service(compose, "grafana"))
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true", "grafana: anonymous access is off"
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer", "anonymous users must be viewers"


def test_dashboard_identity_and_rows(dashboard: dict[str, Any]) -> None:
    assert dashboard.get("uid") == "voxpersona"
    assert dashboard.get("title") == "VoxPersona pipeline"
    assert 36 <= dashboard.get("schemaVersion", 0) <= 41, dashboard.get("schemaVersion")
    panels = list(dashboard_panels(dashboard.get("panels") or []))
    ids = [panel.get("id") for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    rows = tuple(panel["title"] for panel in panels if panel.get("type") == "row")
    assert rows == DASHBOARD_ROWS, f"dashboard rows are {rows}, expected {DASHBOARD_ROWS}"


def test_dashboard_panels_query_prometheus(dashboard: dict[str, Any]) -> None:
    panels = [
        panel
        for panel in dashboard_panels(dashboard.get("panels") or [])
        if panel.get("type") != "row"
    ]
    assert panels, "the dashboard has no panels"
    for panel in panels:
        title = panel.get("title")
        assert panel.get("type") in ("timeseries", "stat"), f"{title}: type {panel.get('type')}"
        assert (panel.get("datasource") or {}).get("uid") == "prometheus", (
            f"panel {title!r}: datasource must be uid prometheus, is {panel.get('datasource')}"
        )
        targets = panel.get("targets") or []
        assert targets, f"panel {title!r} has no query"
        assert all(t.get("expr") for t in targets), f"panel {title!r} has a query without expr"
        for target in targets:
            uid = (target.get("datasource") or {}).get("uid", "prometheus")
            assert uid == "prometheus", f"panel {title!r}: a query uses data source {uid!r}"


def test_dashboard_uses_exactly_the_documented_metrics(dashboard: dict[str, Any]) -> None:
    used: dict[str, list[str]] = {}
    for panel in dashboard_panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            for name in metric_names(target.get("expr", "")):
                used.setdefault(name, []).append(panel.get("title", "?"))
    unknown = {name: panels for name, panels in used.items() if name not in DOCUMENTED_METRICS}
    assert not unknown, f"panels query metrics the consumer does not export: {unknown}"
    unused = sorted(DOCUMENTED_METRICS - used.keys())
    assert not unused, f"no panel shows {unused}"


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile_global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (those a FROM line may use)."""
    defaults: dict[str, str] = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            defaults[name.strip()] = default.strip()
    return defaults


def test_dockerfile_is_multi_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, f"Dockerfile needs a builder and a runtime stage, has {len(stages)}"
    defaults = dockerfile_global_args()
    for stage in stages:
        image = re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)),
            stage[0][1].split()[0],
        )
        assert ":" in image, f"Dockerfile: FROM {image!r} has no tag"
        assert not image.endswith(":latest"), f"Dockerfile: pin FROM {image!r}, not :latest"


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for keyword, args in dockerfile_stages()[-1] if keyword == "USER"]
    assert users, "Dockerfile: the final stage has no USER (it would run as root)"
    user = users[-1].split(":", 1)[0]
    assert user not in ("root", "0"), f"Dockerfile: USER {users[-1]} is root"


def test_dockerfile_has_healthcheck_and_consumer_entrypoint() -> None:
    final = dockerfile_stages()[-1]
    healthchecks = [args for keyword, args in final if keyword == "HEALTHCHECK"]
    assert healthchecks, "Dockerfile: the final stage has no HEALTHCHECK"
    assert "NONE" not in healthchecks[-1].split(), "Dockerfile: HEALTHCHECK is disabled"
    assert "/healthz" in healthchecks[-1], "Dockerfile: HEALTHCHECK does not probe /healthz"
    entrypoint = dockerfile_entrypoint()
    assert "consumer" in entrypoint, f"Dockerfile: ENTRYPOINT {entrypoint} does not run consumer"


def test_dockerfile_copies_exist_and_are_not_dockerignored() -> None:
    copies = [
        args.split()
        for stage in dockerfile_stages()
        for keyword, args in stage
        if keyword in ("COPY", "ADD")
    ]
    sources = [
        src
        for parts in copies
        if not any(p.startswith("--from") for p in parts)
        for src in [p for p in parts if not p.startswith("--")][:-1]
    ]
    for required in ("pyproject.toml", "consumer/", "minio-notify.json"):
        assert required in sources, f"Dockerfile does not COPY {required}"
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not dockerignored(src.rstrip("/")), f".dockerignore excludes {src}, COPY needs it"


@pytest.mark.parametrize("path", [".venv", ".git", ".stack", ".pytest_cache", "x/__pycache__"])
def test_dockerignore_excludes_local_state(path: str) -> None:
    assert dockerignored(path), f".dockerignore must exclude {path}"
