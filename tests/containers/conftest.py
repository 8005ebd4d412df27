"""The container suite: a real Docker engine (installed and started when none answers,
stopped by pid at the end), compose, and the images built on this machine.

Nothing here skips: a machine where the engine cannot start fails these tests with the
reason (infra.docker.engine.DockerError).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from infra.docker.engine import Engine, engine, ensure_compose
from infra.docker.images import Images, build_all
from tests.containers.compose import PROJECT_PREFIX, ComposeProject


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/containers/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.containers)
            # A cold first build (apt-get, debootstrap, compose from Go, five image builds)
            # takes minutes, and it happens in the first test's setup.
            item.add_marker(pytest.mark.timeout(1500))


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    ensure_compose()
    with engine() as eng:
        _remove_stale_projects(eng)
        try:
            yield eng
        finally:
            _assert_nothing_left(eng)


@pytest.fixture(scope="session")
def images(docker_engine: Engine) -> Images:
    return build_all(docker_engine)


_LISTINGS = {
    "container": (["ps", "-a"], "{{.Names}}"),
    "network": (["network", "ls"], "{{.Name}}"),
    "volume": (["volume", "ls"], "{{.Name}}"),
}


def _project_objects(eng: Engine) -> list[tuple[str, str]]:
    """(kind, name) of every container, network and volume of a test project."""
    found: list[tuple[str, str]] = []
    for kind, (command, name_format) in _LISTINGS.items():
        out = subprocess.run(
            ["docker", *command, "--format", name_format],
            capture_output=True,
            text=True,
            env=eng.env(),
            check=True,
            timeout=60,
        ).stdout
        found += [(kind, name) for name in out.split() if name.startswith(PROJECT_PREFIX)]
    return found


def _remove_stale_projects(eng: Engine) -> None:
    """A run that was killed may have left a project behind on a reused engine."""
    for kind, name in _project_objects(eng):
        command = ["rm", "-f"] if kind == "container" else [kind, "rm"]
        subprocess.run(
            ["docker", *command, name], capture_output=True, env=eng.env(), check=False, timeout=60
        )


def _assert_nothing_left(eng: Engine) -> None:
    """No container, network or volume of a test project may outlive the session."""
    leftovers = _project_objects(eng)
    assert not leftovers, f"left behind: {leftovers}"


@pytest.fixture(scope="module")
def compose_up(docker_engine: Engine, images: Images) -> Iterator[ComposeProject]:
    """The real docker-compose.yml up (SQLite index), shared by one module's tests."""
    project = ComposeProject(docker_engine, images)
    try:
        project.up()
        yield project
    finally:
        project.down()
