"""The alert rules (infra/observability/prometheus/alerts.yml) under ``promtool``: valid,
and each alert fires on the series it is for and stays quiet on the others
(alerts_test.yml beside this file)."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import yaml

from infra.stack.apt import ensure_debian_package
from infra.stack.prometheus import ALERT_RULES

UNIT_TESTS = Path(__file__).with_name("alerts_test.yml")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = ensure_debian_package("prometheus", "promtool")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_file_is_valid() -> None:
    checked = _promtool("check", "rules", str(ALERT_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    tested = _promtool("test", "rules", str(UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_both_firing_and_quiet() -> None:
    rules = yaml.safe_load(ALERT_RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases: dict[str, set[bool]] = defaultdict(set)
    for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].add(bool(case["exp_alerts"]))
    assert {alert: cases[alert] for alert in alerts} == {alert: {True, False} for alert in alerts}
