"""RBAC granted by the rendered manifests, asked of the real apiserver with `kubectl auth can-i --as`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import Cluster
from sscsi_operator.render import NAMES, render
from sscsi_operator.settings import Settings
from sscsi_operator.spec import parse_spec


def rbac_objects(namespace: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    settings = Settings.from_environment({"OPERAND_NAMESPACE": namespace})
    kinds = {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"}
    return [m for m in render(parse_spec(spec), settings) if m["kind"] in kinds]


@pytest.fixture
def rbac(cluster: Cluster, namespace: str, request: pytest.FixtureRequest) -> Iterator[str]:
    sync = bool(request.param)
    objects = rbac_objects(namespace, {"driverConfig": {"secretsStore": {"syncSecret": {"enabled": sync}}}})
    existing = cluster.kubectl("get", "clusterrole", "secretproviderclasses-role", "-o", "name")
    if existing.returncode == 0:
        pytest.skip("driver ClusterRoles already exist (an operator test owns them right now)")
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    out = cluster.kubectl("apply", "-f", "-", input=doc)
    assert out.returncode == 0, out.stderr
    try:
        yield f"system:serviceaccount:{namespace}:{NAMES.service_account}"
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=doc)


def can(cluster: Cluster, who: str, verb: str, resource: str, namespace: str = "default") -> bool:
    out = cluster.kubectl("auth", "can-i", verb, resource, "--as", who, "-n", namespace)
    return out.stdout.strip() == "yes"


@pytest.mark.parametrize("rbac", [False], indirect=True)
def test_driver_cannot_touch_secrets_when_sync_is_off(cluster: Cluster, rbac: str) -> None:
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert not can(cluster, rbac, verb, "secrets"), verb
    # what the driver does need is granted
    assert can(cluster, rbac, "get", "secretproviderclasses.secrets-store.csi.x-k8s.io")
    assert can(cluster, rbac, "create", "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io")
    assert can(cluster, rbac, "create", "events")
    assert not can(cluster, rbac, "create", "serviceaccounts/token"), "kubelet mints tokens, not the driver"
    assert not can(cluster, rbac, "delete", "pods")
    # least privilege (tests/e2e/test_driver_rbac.py): the node's pod watch, no single pod read
    # without sync, nothing unused
    assert can(cluster, rbac, "watch", "pods") and can(cluster, rbac, "list", "pods")
    assert not can(cluster, rbac, "get", "pods")
    assert not can(cluster, rbac, "patch", "events")
    assert not can(cluster, rbac, "delete", "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io")


@pytest.mark.parametrize("rbac", [True], indirect=True)
def test_driver_can_sync_secrets_when_sync_is_on(cluster: Cluster, rbac: str) -> None:
    for verb in ("get", "list", "watch", "create", "update", "delete"):
        assert can(cluster, rbac, verb, "secrets"), verb
    assert not can(cluster, rbac, "patch", "secrets"), "the driver updates with a resourceVersion"
    assert can(cluster, rbac, "get", "pods"), "the consuming pods' owners own the Secrets"


@pytest.mark.parametrize("rbac", [True], indirect=True)
def test_user_facing_roles_view_but_never_write_pod_statuses(
    cluster: Cluster, rbac: str, namespace: str
) -> None:
    viewer = f"system:serviceaccount:{namespace}:viewer"
    cluster.kubectl("create", "serviceaccount", "viewer", "-n", namespace)
    out = cluster.kubectl(
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:viewer",
        "-n",
        namespace,
    )
    assert out.returncode == 0, out.stderr
    spcps = "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"

    def viewer_can(verb: str, resource: str) -> bool:
        return can(cluster, viewer, verb, resource, namespace)

    # aggregation into the built-in `view` role happens asynchronously (clusterrole-aggregation controller)
    import time

    deadline = time.monotonic() + 30
    while not viewer_can("list", spcps) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert viewer_can("get", spcps) and viewer_can("list", spcps) and viewer_can("watch", spcps)
    assert viewer_can("list", "secretproviderclasses.secrets-store.csi.x-k8s.io")
    for verb in ("create", "update", "patch", "delete"):
        assert not viewer_can(verb, spcps), verb
        assert not viewer_can(verb, f"{spcps}/status"), verb
