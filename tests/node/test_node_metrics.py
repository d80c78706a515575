"""The driver pod's metrics endpoint (upstream e2e-provider.bats 26)."""

from __future__ import annotations

from nodekit import http_get
from nodesetup import Installation


def test_metrics(installation: Installation) -> None:
    ip = installation.driver_pod()["status"]["podIP"]
    body = http_get(f"http://{ip}:8095/metrics")
    for name in ("node_publish_total", "node_unpublish_total", "rotation_reconcile_total"):
        assert name in body, name
