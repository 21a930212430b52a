"""Grafana provisioning and dashboards: JSON loads, PromQL uses exported metrics, SQL runs on the migrated schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from citystream import clickhouse
from citystream.settings import ClickHouseSettings
from tests.deploy.metric_names import exported_names, promql_metric_names

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
PROM_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# Grafana's ClickHouse macros, replaced by plain SQL over the test data's window (the last week).
SQL_MACROS = [
    (re.compile(r"\$__timeFilter\(([^)]+)\)"), r"(\1 >= now() - INTERVAL 7 DAY AND \1 <= now() + INTERVAL 1 DAY)"),
    (re.compile(r"\$__fromTime\b"), "(now() - INTERVAL 7 DAY)"),
    (re.compile(r"\$__toTime\b"), "(now() + INTERVAL 1 DAY)"),
]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(dashboard file, panel title, target) of every query to a data source of the given type."""
    found = []
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("type") == kind:
                    found.append((path.name, panel["title"], target))
    return found


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's interval variables replaced."""
    for var, value in PROM_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def plain_sql(sql: str) -> str:
    """A panel's SQL with Grafana macros replaced."""
    for pattern, replacement in SQL_MACROS:
        sql = pattern.sub(replacement, sql)
    assert "$" not in sql, f"unsubstituted macro in {sql!r}"
    return sql


def recorded_names() -> set[str]:
    return {r["record"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
            for r in g["rules"] if "record" in r}


@pytest.mark.unit
def test_every_dashboard_loads_with_unique_uid_and_panel_ids() -> None:
    assert {p.name for p in DASHBOARDS} >= {"pipeline-health.json", "gateways.json", "city-analytics.json"}
    uids = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.append(dashboard["uid"])
        assert dashboard["title"] and dashboard["panels"], path.name
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), path.name
    assert len(uids) == len(set(uids))


@pytest.mark.unit
def test_provisioning_names_the_data_sources_the_dashboards_use() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "citystream.yml").read_text())
    provisioned = {(d["type"], d["uid"]) for d in sources["datasources"]}
    assert ("grafana-clickhouse-datasource", "clickhouse") in provisioned
    used = {(t["datasource"]["type"], t["datasource"]["uid"])
            for kind in ("prometheus", "grafana-clickhouse-datasource") for _f, _t, t in targets(kind)}
    assert used <= provisioned
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "citystream.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.unit
def test_every_promql_metric_exists_in_the_code() -> None:
    queries = targets("prometheus")
    assert len(queries) >= 30
    known = exported_names() | recorded_names()
    unknown = {(f, title, name) for f, title, t in queries for name in promql_metric_names(promql(t["expr"]))
               if name not in known}
    assert unknown == set()


@pytest.mark.unit
def test_every_promql_expression_parses(tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus' (make setup does)")
    rules = [{"record": f"dashboard:query{i}", "expr": promql(t["expr"])}
             for i, (_f, _title, t) in enumerate(targets("prometheus"))]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    res = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.integration
def test_every_sql_panel_runs_on_the_migrated_schema_and_returns_rows(analyst_store: ClickHouseSettings) -> None:
    queries = targets("grafana-clickhouse-datasource")
    assert len(queries) >= 8
    empty = []
    for f, title, target in queries:
        try:
            rows = clickhouse.query_rows(analyst_store, plain_sql(target["rawSql"]))
        except Exception as exc:  # report which panel broke
            raise AssertionError(f"{f} / {title}: {exc}") from exc
        if not rows:
            empty.append((f, title))
    assert empty == []


@pytest.mark.unit
def test_compose_runs_prometheus_and_grafana_on_these_files() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    mounts = {v.split(":")[0] for name in ("prometheus", "grafana") for v in services[name]["volumes"]}
    for source in ("./deploy/prometheus", "./deploy/grafana/provisioning", "./deploy/grafana/dashboards"):
        assert source in mounts and (REPO / source).is_dir()
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
