"""The PrometheusRule the operator renders: only with the CRD, valid for promtool, documented.

Evaluation against metrics scraped from the real driver: tests/e2e/test_alerts.py. Here only the
alert whose input is not the driver's (kube-state-metrics' DaemonSet status) is evaluated."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sscsi_operator.apply import child_kinds
from sscsi_operator.kinds import PROMETHEUS_RULE, SERVICE_MONITOR

from unit.bundle.alerts_rules import (
    NAMESPACE,
    ROOT,
    alerting_rules,
    expected_alert,
    promtool,
    promtool_test,
    rendered,
    write_rule_file,
)

ALERTS = {
    "SecretsStoreCSIMountFailures",
    "SecretsStoreCSIRotationFailures",
    "SecretsStoreCSIProviderMissing",
    "SecretsStoreCSIDriverDown",
    "SecretsStoreCSIDriverNotRegistered",
    "SecretsStoreCSISyncRefused",
}
DASHBOARD = ROOT / "assets" / "dashboards" / "secrets-store-csi-driver.json"
UPSTREAM_METRICS = {
    "node_publish_total",
    "node_unpublish_total",
    "node_publish_error_total",
    "node_unpublish_error_total",
    "rotation_reconcile_total",
    "rotation_reconcile_error_total",
    "rotation_reconcile_duration_sec",
    "sync_k8s_secret_total",
    "k8s_secret_duration_sec",
}


def test_rendered_only_when_the_crd_is_served() -> None:
    assert not [m for m in rendered(prometheus_rule_crd=False) if m["kind"] == "PrometheusRule"]
    [rule] = [m for m in rendered() if m["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "secrets-store-csi-operator"


def test_every_alert_says_what_to_run_and_is_documented() -> None:
    rules = alerting_rules()
    assert set(rules) == ALERTS
    docs = (ROOT / "docs" / "alerts.md").read_text()
    for name, rule in rules.items():
        assert "kubectl secrets-store doctor" in rule["annotations"]["description"], name
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert f"`{name}`" in docs, f"{name} is not in docs/alerts.md"


def test_promtool_check_rules(tmp_path: Path) -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(write_rule_file(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_not_registered_fires_on_unavailable_driver_pods(tmp_path: Path) -> None:
    labels = {"daemonset": "secrets-store-csi-driver-node", "namespace": NAMESPACE}
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"kube_daemonset_status_number_unavailable{{{selector}}}"
    healthy = [{"series": series, "values": "0x30"}]
    failing = [{"series": series, "values": "0x5 1x25"}]
    name = "SecretsStoreCSIDriverNotRegistered"
    quiet = [{"eval_time": f"{m}m", "alertname": name, "exp_alerts": []} for m in (10, 20, 30)]
    out = promtool_test(tmp_path, healthy, quiet)
    assert out.returncode == 0, out.stdout + out.stderr
    fired = [
        {"eval_time": "12m", "alertname": name, "exp_alerts": []},  # 7 minutes in: not yet (for: 15m)
        {"eval_time": "25m", "alertname": name, "exp_alerts": [expected_alert(name, labels, "1")]},
    ]
    out = promtool_test(tmp_path, failing, fired)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_queries_upstream_metric_names() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for m in UPSTREAM_METRICS if any(m in e for e in exprs)}
    assert used == UPSTREAM_METRICS
    assert dashboard["uid"] and dashboard["title"]


def test_the_operator_lists_prometheus_rules_only_when_served() -> None:
    assert PROMETHEUS_RULE not in child_kinds(True, False)
    assert SERVICE_MONITOR not in child_kinds(False, True)
    assert {PROMETHEUS_RULE, SERVICE_MONITOR} <= set(child_kinds(True, True))
