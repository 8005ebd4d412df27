"""The manual's reference pages against the code they are written from.

``make docs`` (part of ``make test``) builds the site strictly; the pages of the
reference are written from the code at every build by docs/_ext/reference_pages.py.
These tests hold that writer to the code: every verb and option of the parser, every
setting and every instrument is on its page, the instrument tables name the series the
Prometheus exporter really serves, and the documented `ls --json` line is the real one.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import re
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from consumer import telemetry
from consumer.cli import build_parser
from consumer.cli.output import object_fields
from consumer.index import ObjectRecord
from consumer.retention import metrics as retention_metrics
from consumer.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pages = _load("reference_pages")
links = _load("repository_links")

ALL_METRICS = (*telemetry.METRICS, *retention_metrics.METRICS)
# The four functions of consumer/telemetry.py that make an instrument from its table entry.
INSTRUMENT_FACTORIES = {"counter", "histogram", "gauge", "observable_gauge"}
METER_METHODS = {
    "create_counter",
    "create_up_down_counter",
    "create_histogram",
    "create_gauge",
    "create_observable_counter",
    "create_observable_up_down_counter",
    "create_observable_gauge",
}


def _leaf_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(verb.name, verb.parser) for verb in pages.walk_verbs(build_parser())]


def test_every_verb_and_option_is_in_the_cli_reference() -> None:
    text = pages.render_cli(DOCS / "reference" / "cli")
    verbs = _leaf_parsers()
    # The whole tree: every verb the parser knows, the nested ones too.
    assert {name for name, _ in verbs} >= {"setup", "run", "ls", "presign upload", "import"}
    for name, parser in verbs:
        assert f"`{name}`" in text, name
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, (name, option)


def test_every_verb_note_is_included_and_belongs_to_a_verb(tmp_path: Path) -> None:
    text = pages.render_cli(DOCS / "reference" / "cli")
    for note in (DOCS / "reference" / "cli").glob("*.md"):
        assert f"```{{include}} cli/{note.name}" in text
    (tmp_path / "no-such-verb.md").write_text("notes", encoding="utf-8")
    with pytest.raises(ValueError, match="no-such-verb"):
        pages.render_cli(tmp_path)


def test_every_setting_is_in_the_settings_reference_with_its_description() -> None:
    text = pages.render_settings()
    for field in Settings.model_fields.values():
        assert field.alias is not None
        assert field.description, f"{field.alias} needs a description="
        assert f"| `{field.alias}` |" in text
        assert pages.escape(field.description) in text
    # Defaults as a person reads them, never this machine's paths.
    assert "| `MINIO_ENDPOINT` | `127.0.0.1:9000` |" in text
    assert "`consumer/minio-notify.json` (package data)" in text
    assert str(Path.home()) not in text


def test_every_instrument_is_in_the_metrics_reference() -> None:
    text = pages.render_metrics()
    for spec in ALL_METRICS:
        assert f"| `{spec.prometheus_name}` | `{spec.name}` | {spec.kind} |" in text


def test_every_instrument_comes_from_a_documented_table() -> None:
    """An instrument made with the Meter's own create_* (or a MetricSpec left out of its
    module's METRICS) would be served but missing from the reference."""
    tables = pages.metric_tables()
    assert {name for name, _ in tables} >= {"consumer.telemetry", "consumer.retention.metrics"}
    documented = {spec for _, table in tables for spec in table}
    package = DOCS.parent / "consumer"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in INSTRUMENT_FACTORIES:
                continue
            called = node.func if isinstance(node, ast.Call) else None
            if getattr(called, "attr", None) in METER_METHODS:
                factory = _enclosing_function(tree, node)
                assert factory in INSTRUMENT_FACTORIES, (path, node.lineno)
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        if module.endswith("__main__"):
            continue
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, telemetry.MetricSpec):
                assert value in documented, (module, value.name)


def _enclosing_function(tree: ast.AST, target: ast.AST) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(child is target for child in ast.walk(node)):
            return node.name
    return None


def test_the_prometheus_names_are_those_the_exporter_serves() -> None:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(disable_target_info=True, registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("docs-test")
    for spec in ALL_METRICS:
        if spec.kind == "counter":
            telemetry.counter(meter, spec).add(1)
        elif spec.kind == "histogram":
            telemetry.histogram(meter, spec).record(0.5)
        elif spec.kind == "gauge":
            telemetry.gauge(meter, spec).set(3)
        else:
            telemetry.observable_gauge(meter, spec, lambda _: iter([Observation(7)]))
    served = generate_latest(registry).decode()
    provider.shutdown()
    for spec in ALL_METRICS:
        pattern = rf"^{re.escape(spec.prometheus_name)}(_bucket)?[{{ ]"
        assert re.search(pattern, served, re.MULTILINE), (spec.prometheus_name, served)


def test_an_instrument_is_made_only_as_its_kind() -> None:
    meter = MeterProvider().get_meter("docs-test")
    with pytest.raises(ValueError, match="is a histogram, not a counter"):
        telemetry.counter(meter, telemetry.DELAY)


def test_the_import_contract_is_on_the_architecture_page() -> None:
    pyproject = DOCS.parent / "pyproject.toml"
    text = pages.render_layers(pyproject)
    contract = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"]
    for layer in contract["contracts"][0]["layers"]:
        for module in layer.split("|"):
            assert f"`{module.strip()}`" in text
    page = (DOCS / "development" / "architecture.md").read_text(encoding="utf-8")
    assert "```{include} ../_generated/import-layers.md" in page


def test_the_documented_ls_line_is_the_real_one() -> None:
    notes = (DOCS / "reference" / "cli" / "ls.md").read_text(encoding="utf-8")
    example = re.search(r"```json\n(.*?)```", notes, re.DOTALL)
    assert example is not None
    documented = json.loads(example.group(1))
    when = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    record = ObjectRecord(
        bucket="voxpersona-audio",
        key="user_5/interview.ogg",
        version_id="",
        size=48213,
        etag="9b2cf5",
        content_type="audio/ogg",
        user_id="5",
        metadata={"user-id": "5"},
        first_event_time=when,
        last_event_time=when,
        sequencer="1",
        indexed_at=when,
        deleted=False,
        processing_status="done",
        is_latest=True,
    )
    assert set(documented) == set(object_fields(record))


def test_links_to_repository_files_outside_the_manual_become_paths(tmp_path: Path) -> None:
    srcdir = tmp_path / "docs"
    (srcdir / "dev").mkdir(parents=True)
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "README.md").write_text("x", encoding="utf-8")
    (tmp_path / "bench" / "results" / "plot.png").write_text("x", encoding="utf-8")
    page = srcdir / "dev" / "page.md"
    text = (
        "[how](../../bench/README.md), [results](../../bench/results/), "
        "![plot](../../bench/results/plot.png), [png](../../bench/results/plot.png), "
        "[page](other.md#a), [web](https://example.org/x.md)"
    )
    assert links.rewrite_outside_links(text, page, srcdir) == (
        "how (`bench/README.md`), results (`bench/results/`), "
        "![plot](../../bench/results/plot.png), [png](../../bench/results/plot.png), "
        "[page](other.md#a), [web](https://example.org/x.md)"
    )


def test_the_readme_is_a_front_door_whose_links_lead_somewhere() -> None:
    readme = DOCS.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(target.startswith("docs/") for target in targets)
    for target in targets:
        if "://" not in target:
            assert (readme.parent / target.split("#", 1)[0]).exists(), target
    # The one command CI runs is still the one the README gives.
    assert "make test" in text
