"""status on the recorded world: operator and CR conditions, per-node driver, providers, volumes, errors."""

from __future__ import annotations

import json

from sscsi_cli import promtext

from .conftest import World


def _status(world: World) -> tuple[int, dict]:
    code, out = world.cli("status", "-o", "json")
    return code, json.loads(out)


def test_healthy_cluster(world: World) -> None:
    code, report = _status(world)
    assert code == 0, report
    (row,) = report["nodes"]
    assert row["name"] == world.about["node"]
    assert row["ready"] and row["driver"] == "ready" and row["registered"] == "yes"
    assert {"e2e-provider", "upstream-e2e-provider"} <= set(row["providers"])
    assert int(row["volumes"]) >= 1
    assert row["mount_errors"].isdigit() and row["rotation_failures"].isdigit()
    assert row["version"], row
    conditions = {c["type"]: c["status"] for c in report["sections"][0]["conditions"]}
    assert conditions["Available"] == "True" and conditions["Degraded"] == "False"


def test_text_table(world: World) -> None:
    code, out = world.cli("status")
    assert code == 0
    assert "nodes: 1/1 ready, the driver serving on 1/1 it is placed on" in out.splitlines()
    header = next(line for line in out.splitlines() if line.startswith("NODE"))
    assert header.split() == [
        "NODE",
        "READY",
        "DRIVER",
        "REGISTERED",
        "PROVIDERS",
        "VOLUMES",
        "MOUNT-ERRORS",
        "ROTATION-FAILURES",
    ]


def test_node_without_the_driver_is_broken(world: World) -> None:
    world.cluster.remove("Pod", None, app="secrets-store-csi-driver-node")
    code, report = _status(world)
    assert code == 1
    node_links = report["sections"][1]["links"]
    assert node_links[0]["reason"] == "DriverNotServing"


def test_metrics_counted_per_node(world: World) -> None:
    driver = world.about["driverPod"]
    world.cluster.metrics[driver] = (
        "# TYPE node_publish_error_total counter\n"
        'node_publish_error_total{error_type="",os_type="linux",provider=""} 3.0\n'
        'node_publish_error_total{error_type="GRPCProviderError",os_type="linux",provider=""} 2.0\n'
        'rotation_reconcile_error_total{error_type="x",os_type="linux",provider="",rotated="true"} 4.0\n'
    )
    _, report = _status(world)
    row = report["nodes"][0]
    assert (row["mount_errors"], row["rotation_failures"]) == ("5", "4")


def test_namespace_user(world: World) -> None:
    world.cluster.forbidden |= {
        ("get", "clustercsidrivers", None),
        ("list", "nodes", None),
        ("list", "csinodes", None),
        ("list", "pods", ""),
        ("list", "secretproviderclasspodstatuses", ""),
        ("list", "pods", "secrets-store-csi-driver"),
        ("get", "daemonsets", "secrets-store-csi-driver"),
        ("get", "deployments", "secrets-store-csi-driver"),
    }
    code, report = _status(world)
    assert code == 3
    verdicts = {link["link"]: link["verdict"] for s in report["sections"] for link in s["links"]}
    assert verdicts["ClusterCSIDriver"] == "unknown" and verdicts["nodes"] == "unknown"


def test_prometheus_text() -> None:
    text = (
        "# HELP node_publish_total x\n"
        'node_publish_total{os_type="linux",provider="a b"} 7.0\n'
        'node_publish_total{os_type="linux",provider="c"} 1\n'
        'k8s_secret_duration_sec_bucket{le="+Inf",os_type="linux"} 2.0\n'
        "garbage line\n"
    )
    samples = promtext.parse(text)
    assert promtext.total(samples, "node_publish_total") == 8
    assert promtext.total(samples, "node_publish_total", provider="a b") == 7
    assert promtext.total(samples, "k8s_secret_duration_sec_bucket", le="+Inf") == 2
