"""Static checks of docker-compose.yml, Dockerfile and .dockerignore (no Docker needed).

The compose file is parsed with ``yaml.safe_load`` and interpolated the way compose does
(``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``) against a fake environment,
then checked against the consumer's own contract: ``consumer.settings.Settings`` (every env
alias), ``minio-notify.json`` (the notify target id) and the Dockerfile's ENTRYPOINT.
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


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, f"Dockerfile needs a builder and a runtime stage, has {len(stages)}"
    for stage in stages:
        image = stage[0][1].split()[0]
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
