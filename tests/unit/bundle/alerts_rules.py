"""Shared by the alert tests: the operator's PrometheusRule, promtool (hack/promtool.sh installs it),
and scrapes of the driver's /metrics turned into promtool's input series."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from sscsi_operator import render, settings
from sscsi_operator.spec import OperatorSpec

ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "secrets-store-csi-driver"
# What Prometheus (ServiceMonitor defaults) attaches to every sample scraped from one driver pod.
TARGET = {
    "job": render.NAMES.metrics_service,
    "namespace": NAMESPACE,
    "pod": "secrets-store-csi-driver-node-abcde",
    "instance": "10.0.0.7:8095",
    "endpoint": "metrics",
    "service": render.NAMES.metrics_service,
}


def rendered(prometheus_rule_crd: bool = True) -> list[dict[str, Any]]:
    operator_settings = settings.Settings(
        images=settings.Images("driver", "livenessprobe"),
        namespace=NAMESPACE,
        templates_dir=ROOT / "assets" / "templates",
        version="0.0.0",
    )
    facts = render.ClusterFacts(prometheus_rule_crd=prometheus_rule_crd)
    return render.render(OperatorSpec(), operator_settings, facts=facts)


def prometheus_rule() -> dict[str, Any]:
    [rule] = [m for m in rendered() if m["kind"] == "PrometheusRule"]
    return rule


def alerting_rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in prometheus_rule()["spec"]["groups"] for r in g["rules"]}


def write_rule_file(directory: Path) -> Path:
    """The PrometheusRule's spec is a Prometheus rule file (`groups:`)."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(prometheus_rule()["spec"], sort_keys=False))
    return path


def promtool() -> str:
    out = subprocess.run(
        [str(ROOT / "hack" / "promtool.sh")], capture_output=True, text=True, check=False, timeout=900
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def expected_alert(name: str, labels: dict[str, str], value: str = "") -> dict[str, Any]:
    """promtool's exp_labels/exp_annotations: the rule's labels and its templates expanded."""
    rule = alerting_rules()[name]

    def expand(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
        return text.replace("{{ $value }}", value)

    annotations = {k: expand(v) for k, v in rule["annotations"].items()}
    return {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}


def promtool_test(
    directory: Path, series: list[dict[str, str]], alerts: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    rules = write_rule_file(directory)
    spec = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": alerts}],
    }
    test_file = directory / "test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
    return subprocess.run(
        [promtool(), "test", "rules", test_file.name],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _series_name(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


@dataclass
class Scrapes:
    """One scrape per step; step i becomes minute i of promtool's timeline."""

    steps: int = 0
    values: dict[str, dict[int, float]] = field(default_factory=dict)

    def record(self, text: str | None) -> None:
        """A scrape's exposition text, or None when the scrape failed (`up` 0)."""
        self._put(_series_name("up", TARGET), 0.0 if text is None else 1.0)
        for family in text_string_to_metric_families(text or ""):
            for sample in family.samples:
                labels = dict(sample.labels)
                if "namespace" in labels:  # honor_labels false: the target's label wins
                    labels["exported_namespace"] = labels.pop("namespace")
                self._put(_series_name(sample.name, {**labels, **TARGET}), float(sample.value))
        self.steps += 1

    def _put(self, series: str, value: float) -> None:
        self.values.setdefault(series, {})[self.steps] = value

    def input_series(self) -> list[dict[str, str]]:
        def fmt(step: int, by_step: dict[int, float]) -> str:
            return f"{by_step[step]:g}" if step in by_step else "_"

        return [
            {"series": name, "values": " ".join(fmt(i, by_step) for i in range(self.steps))}
            for name, by_step in sorted(self.values.items())
        ]
