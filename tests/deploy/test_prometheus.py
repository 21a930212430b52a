"""Prometheus config and alert rules: promtool checks and unit tests, and every metric they use exists in the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import exported_names, promql_metric_names

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in deploy/prometheus; fail (not skip) when it is missing."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus' (make setup does)")
    return subprocess.run([exe, *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    """Every rule (alerting and recording) of every rule file."""
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_config_is_valid() -> None:
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rules found" in res.stdout  # the rule_files glob matched the rules


def test_the_rules_are_valid() -> None:
    res = promtool("check", "rules", *(str(p.relative_to(PROM)) for p in RULE_FILES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_rule_unit_tests_pass() -> None:
    assert len(TEST_FILES) >= 5
    res = promtool("test", "rules", *(str(p.relative_to(PROM)) for p in TEST_FILES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(TEST_FILES)


def test_every_alert_has_severity_summary_description_and_a_runbook_paragraph() -> None:
    anchors = runbook_anchors()
    assert len(alerts()) >= 20
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, name
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], name
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and anchor == name.lower(), name
        assert anchor in anchors, f"{name}: docs/runbook.md has no heading for #{anchor}"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_every_metric_the_rules_use_exists_in_the_code() -> None:
    known = exported_names() | {r["record"] for r in rules() if "record" in r}
    unknown = {(r.get("alert") or r["record"], name)
               for r in rules() for name in promql_metric_names(r["expr"]) if name not in known}
    assert unknown == set()


def test_the_metric_check_sees_a_misspelt_name() -> None:
    known = exported_names()
    used = promql_metric_names('sum by (job) (rate(citystream_bridge_recieved_total{stream="reading"}[5m])) > 0')
    assert used == {"citystream_bridge_recieved_total"} and not used <= known
    assert "citystream_bridge_received_total" in known


def test_promql_names_skip_functions_labels_keywords_and_numbers() -> None:
    expr = ('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{le!="+Inf", x=~"y|z"}[5m] offset 1h)))'
            ' > 1e3 and on (job) group_left (version) b:rec:rate5m unless ignoring (instance) up == bool 0')
    assert promql_metric_names(expr) == {"a_bucket", "b:rec:rate5m", "up"}
