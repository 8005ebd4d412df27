"""The package's structure, held against its code: every aiokafka client built in one
module, and no import circles (the layers themselves: `lint-imports`, in `make lint`)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_CLIENTS = frozenset({"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"})
# The one module allowed to construct them: it gives each client the security settings.
CLIENT_FACTORY = REPO_ROOT / "consumer" / "kafka" / "clients.py"


def kafka_client_constructions(source: str) -> list[tuple[int, str]]:
    """(line, class) of every call that constructs an aiokafka client in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in KAFKA_CLIENTS:
            found.append((node.lineno, name))
    return found


def package_sources() -> Iterator[Path]:
    for folder in ("consumer", "bench"):
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def test_the_scan_finds_a_construction_written_either_way() -> None:
    source = (
        "import aiokafka\nfrom aiokafka import AIOKafkaProducer\n"
        "a = AIOKafkaProducer(bootstrap_servers='x')\n"
        "b = aiokafka.AIOKafkaConsumer('t')\n"
        "c = AIOKafkaAdminClientish()\n"
    )
    assert kafka_client_constructions(source) == [(3, "AIOKafkaProducer"), (4, "AIOKafkaConsumer")]


def test_only_the_client_factory_constructs_kafka_clients() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line} constructs {name}"
        for path in package_sources()
        if path != CLIENT_FACTORY
        for line, name in kafka_client_constructions(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "build Kafka clients with consumer.kafka.clients.new_*"
    assert kafka_client_constructions(CLIENT_FACTORY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("consumer")


def test_no_module_of_the_package_imports_itself_back(graph: grimp.ImportGraph) -> None:
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circles.append(" -> ".join((module, *back)))
    assert circles == []
