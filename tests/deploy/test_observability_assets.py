"""The SRE assets in deploy/: Prometheus rules, their unit tests and the Grafana dashboard.

Strategy: promtool (Debian package prometheus) checks the rules and runs their unit tests; the
dashboard's queries, with Grafana's variables filled in, are wrapped as recording rules in a
temporary file so promtool parses them too. Every metric name a query uses must be one that
proxy.observability.metrics registers (or a recording rule of ours, or `up`), so a renamed
metric breaks this test instead of a dashboard nobody looks at until the incident.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import proxy.observability.metrics  # noqa: F401  (registers modgate's collectors in REGISTRY)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/modgate-alerts.yaml"
RULE_TESTS = REPO / "deploy/prometheus/modgate-alerts.test.yaml"
RUNBOOK = REPO / "deploy/prometheus/README.md"
DASHBOARD = REPO / "deploy/grafana/modgate-dashboard.json"

DATASOURCE_UIDS = {"${datasource}", "$datasource"}
# Grafana's variables as promtool should see them: any job and module, typical intervals.
GRAFANA_VARIABLES = {
    "job": ".*",
    "module": ".*",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
MODULE_FILTER = 'module=~"$module"'
ALLOWED_FOREIGN_METRICS = {"up"}
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}|\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
_SELECTOR = re.compile(r"(?<![\w:])(modgate[_:][\w:]*)\s*(\{[^{}]*\})?")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is needed: install the Debian package prometheus (make test does)",
            pytrace=False,
        )
    return path


def _run_promtool(*args: str | Path) -> None:
    done = subprocess.run(
        [_promtool(), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {args[0]} failed:\n{done.stdout}\n{done.stderr}"


# -- what the assets contain ---------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _recorded_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query in the dashboard: targets, annotations, variables."""
    dashboard = _dashboard()
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {target['refId']}", target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<selector>, <label>) is Grafana's; the selector is PromQL.
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert selector, f"${variable['name']}: {variable['definition']}"
            yield f"variable ${variable['name']}", selector[1]


def _exported_names() -> set[str]:
    """Series names modgate's registry exposes: counters get _total, histograms their parts."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("modgate_"):
            continue
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{part}" for part in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def _metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, matchers, label lists removed)."""
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = _LABEL_LIST.sub(" ", expr)
    return {
        name
        for name, call in _IDENTIFIER.findall(expr)
        if not call and name.lower() not in PROMQL_KEYWORDS
    }


def _unknown_names(expr: str, known: set[str]) -> set[str]:
    return _metric_names(expr) - known - ALLOWED_FOREIGN_METRICS


def _for_promtool(expr: str) -> str:
    """The query as Grafana would send it; unknown variables are left for the caller to see."""

    def value(match: re.Match[str]) -> str:
        return GRAFANA_VARIABLES.get(match[1] or match[2], match[0])

    return _VARIABLE.sub(value, expr)


# -- rules -----------------------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    _run_promtool("check", "rules", RULES)


def test_rule_unit_tests_pass() -> None:
    _run_promtool("test", "rules", RULE_TESTS)


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in _alerts()}
    assert {"ModgateHigh5xxRatio", "ModgateRateLimitRedisFallback"} <= names
    assert names - firing == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def test_alerts_have_for_severity_and_a_runbook_section() -> None:
    headings = set(re.findall(r"^### (\w+)$", RUNBOOK.read_text(), flags=re.MULTILINE))
    for alert in _alerts():
        name = alert["alert"]
        assert "for" in alert, name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook"] == f"deploy/prometheus/README.md#{name.lower()}", name
        assert name in headings, f"{name} has no '### {name}' section in {RUNBOOK.name}"


def test_every_recording_rule_is_used() -> None:
    users = [rule["expr"] for rule in _rules()] + [expr for _, expr in _dashboard_queries()]
    unused = {
        name for name in _recorded_names() if not any(name in _metric_names(e) for e in users)
    }
    assert unused == set()


# -- metric names ----------------------------------------------------------------------------


def test_name_check_sees_selectors_and_ignores_labels_functions_and_strings() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, module) (rate(modgate_typo_bucket{job=~"up"}'
        '[5m]))) / on (job) group_left modgate:x:rate5m offset 5m and up{job="modgate_no"}'
    )
    assert _metric_names(expr) == {"modgate_typo_bucket", "modgate:x:rate5m", "up"}


def test_exported_names_cover_counters_gauges_and_histograms() -> None:
    names = _exported_names()
    assert {
        "modgate_requests_total",
        "modgate_route_table_version",
        "modgate_request_duration_seconds_bucket",
        "modgate_request_duration_seconds_count",
    } <= names
    assert "modgate_requests" not in names


def test_queries_only_use_exported_metrics() -> None:
    known = _exported_names() | _recorded_names()
    queries = [(f"rule {r.get('record') or r['alert']}", r["expr"]) for r in _rules()]
    queries += list(_dashboard_queries())
    unknown = {where: names for where, expr in queries if (names := _unknown_names(expr, known))}
    assert unknown == {}


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    rules = []
    for number, (where, expr) in enumerate(_dashboard_queries()):
        expr = _for_promtool(expr)
        assert not re.search(r"\$(?!\{\d+\})", expr), f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run_promtool("check", "rules", path)


# -- dashboard -------------------------------------------------------------------------------


def test_panels_have_unique_ids() -> None:
    ids = [panel["id"] for panel in _panels(_dashboard()["panels"])]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_panels_have_title_description_and_unit() -> None:
    for panel in _panels(_dashboard()["panels"]):
        assert panel.get("title"), panel["id"]
        if panel["type"] == "row":
            continue
        assert panel.get("description"), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["targets"], panel["title"]


def test_datasources_only_through_the_variable() -> None:
    def datasources(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                yield node["datasource"]
            for value in node.values():
                yield from datasources(value)
        elif isinstance(node, list):
            for value in node:
                yield from datasources(value)

    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    for source in datasources(_dashboard()):
        assert source == builtin or source["uid"] in DATASOURCE_UIDS, source


def test_template_variables() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    module = variables["module"]
    assert module["multi"] and module["includeAll"]
    assert re.match(r"label_values\(modgate_requests_total\b.*, module\)$", module["definition"])


def test_per_module_panels_follow_the_module_variable() -> None:
    per_module = []
    for panel in _panels(_dashboard()["panels"]):
        targets = panel.get("targets", [])
        by_module = any(
            re.search(r"\bby\s*\([^)]*\bmodule\b", t["expr"]) or "{{module}}" in t["legendFormat"]
            for t in targets
        )
        if by_module:
            per_module.append(panel["title"])
            for target in targets:
                for metric, matchers in _SELECTOR.findall(target["expr"]):
                    assert MODULE_FILTER in matchers, (panel["title"], target["refId"], metric)
    assert len(per_module) >= 5, per_module
