"""ops/prometheus-alerts.yml and ops/grafana-dashboard.json parse, and name
only metrics that /metrics really serves."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fleet.metrics import render_metrics

OPS = Path(__file__).resolve().parents[1] / "ops"
METRIC = re.compile(r"\bfleet_[a-z0-9_]+\b")
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def _served_metric_names() -> set[str]:
    body, _ = render_metrics()
    return {
        family.name + suffix
        for family in text_string_to_metric_families(body.decode())
        for suffix in SUFFIXES.get(family.type, [""])
    }


def _alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((OPS / "prometheus-alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_alerts_cover_what_operators_must_hear_about():
    expressions = _alert_expressions()
    joined = " ".join(expressions.values())
    assert 'fleet_rollouts{status="paused"}' in joined
    assert "fleet_webhook_deliveries_total" in joined
    assert "fleet_engine_tick_seconds_bucket" in joined
    assert "fleet_notification_deliveries_total" in expressions["FleetNotificationDeliveriesFailing"]
    assert all(rule_name.startswith("Fleet") for rule_name in expressions)


def test_the_auto_rollback_alert_counts_automatic_rollbacks_only():
    # fleet_device_updates_total{result="rolled_back"} also grows when an
    # operator rolls a rollout back: that is no alert.
    expression = _alert_expressions()["FleetAutoRollbackExecuted"]
    assert "fleet_auto_rollbacks_total" in expression
    assert "fleet_device_updates_total" not in expression


def test_the_webhook_alert_counts_every_refused_or_failed_delivery():
    expression = _alert_expressions()["FleetWebhookDeliveriesFailing"]
    (statuses,) = re.findall(r'status=~"([^"]+)"', expression)
    assert set(statuses.split("|")) == {"rejected", "invalid", "too_large", "error"}


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_it_references_only_metrics_that_metrics_serves(source):
    expressions = list(_alert_expressions().values()) if source == "alerts" else _dashboard_expressions()
    named = {name for expression in expressions for name in METRIC.findall(expression)}
    assert named, "no metric found"
    assert named <= _served_metric_names(), named - _served_metric_names()


def _served_counters() -> set[str]:
    body, _ = render_metrics()
    return {family.name + "_total" for family in text_string_to_metric_families(body.decode()) if family.type == "counter"}


@pytest.mark.django_db
def test_the_dashboard_charts_every_counter_that_metrics_serves():
    charted = {name for expression in _dashboard_expressions() for name in METRIC.findall(expression)}
    assert _served_counters() - charted == set()


@pytest.mark.parametrize(
    "counter, labels",
    [("fleet_auto_rollbacks_total", "image"), ("fleet_notification_deliveries_total", "result")],
)
def test_the_dashboard_splits_the_newer_counters_by_their_labels(counter, labels):
    expressions = [expression for expression in _dashboard_expressions() if counter in expression]
    assert expressions, counter
    assert all(expression.startswith(f"sum by ({labels}) (") for expression in expressions), expressions


def test_the_dashboard_is_grafana_json_on_a_prometheus_data_source():
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "prometheus"
        assert panel["targets"], panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), ids
