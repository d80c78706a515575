"""Restart on rotation on the real node: the operator (as the CSV deploys it) restarts the annotated
Deployment exactly once when its mounted secret rotates, never the one without the annotation, and
the new pods read the new value."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from nodekit import Kube, app_pod_spec, deployment, deployment_ready, spc, wait_for
from nodesetup import ROTATION_SECONDS, Installation

ANNOTATION = "secrets-store.csi.k8s.io/restart-on-rotation"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MOUNT = "/mnt/secrets-store"


@pytest.fixture
def rotation_off(installation: Installation) -> Iterator[None]:
    yield
    installation.provider_control("/rotation?rotated=false")


def app(name: str, opted_in: bool) -> dict[str, Any]:
    manifest = deployment(name, 2, app_pod_spec([("secrets", "restart-spc", MOUNT)]))
    if opted_in:
        manifest["metadata"]["annotations"] = {ANNOTATION: "true"}
    return manifest


def pod_names(kube: Kube, ns: str, name: str) -> set[str]:
    return {
        p["metadata"]["name"]
        for p in kube.pods(ns, f"app={name}")
        if not p["metadata"].get("deletionTimestamp")
    }


def restarted_at(kube: Kube, ns: str, name: str) -> str | None:
    template = kube.get("deployment", name, ns)["spec"]["template"]["metadata"]
    value = (template.get("annotations") or {}).get(RESTARTED_AT)
    return str(value) if value else None


def restart_events(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kube.events(ns)
        if e.get("reason") == "SecretRotationRestart" and e["involvedObject"].get("name") == name
    ]


def test_rotation_restarts_only_the_annotated_deployment_once(
    installation: Installation, ns: str, rotation_off: None
) -> None:
    kube = installation.kube
    kube.apply(spc("restart-spc", objects=("foo",)), ns)
    kube.apply(app("restart-yes", True), ns)
    kube.apply(app("restart-no", False), ns)
    for name in ("restart-yes", "restart-no"):
        wait_for(f"{name} ready", lambda n=name: deployment_ready(kube, n, ns, 2), 180, interval=2)
    before_yes = pod_names(kube, ns, "restart-yes")
    before_no = pod_names(kube, ns, "restart-no")
    for pod in before_yes:
        assert kube.exec(pod, ns, "cat", f"{MOUNT}/foo") == "secret"

    installation.provider_control("/rotation?rotated=true")
    timeout = 120 + 6 * ROTATION_SECONDS
    stamp = wait_for(
        "the annotated Deployment to be restarted",
        lambda: restarted_at(kube, ns, "restart-yes"),
        timeout,
        interval=2,
    )

    def rolled_out() -> bool:
        current = pod_names(kube, ns, "restart-yes")
        return deployment_ready(kube, "restart-yes", ns, 2) and len(current) == 2 and not current & before_yes

    wait_for("the restart's new pods to be ready", rolled_out, 180, interval=2)
    # The reference provider (like upstream's e2e provider) serves the rotated value only to pods it
    # has served before, so a new pod mounts v1 and gets v2 at its first refresh: a status change
    # the operator must not restart for again (v2 is the version it already restarted for).
    for pod in pod_names(kube, ns, "restart-yes"):
        wait_for(
            f"new pod {pod} to read the rotated value",
            lambda p=pod: kube.exec(p, ns, "cat", f"{MOUNT}/foo") == "rotated",
            timeout,
            interval=2,
        )

    # the other Deployment rotates in place (same pods, new content) and is never restarted
    for pod in before_no:
        wait_for(
            f"{pod} to read the rotated value",
            lambda p=pod: kube.exec(p, ns, "cat", f"{MOUNT}/foo") == "rotated",
            timeout,
            interval=2,
        )
    # the new pods and the stragglers trigger nothing: wait a few rotation periods more
    time.sleep(3 * ROTATION_SECONDS + 10)
    assert restarted_at(kube, ns, "restart-yes") == stamp
    [event] = restart_events(kube, ns, "restart-yes")
    assert "restart-spc" in event["message"] and "v1 -> v2" in event["message"]
    assert restarted_at(kube, ns, "restart-no") is None
    assert pod_names(kube, ns, "restart-no") == before_no
    assert restart_events(kube, ns, "restart-no") == []
