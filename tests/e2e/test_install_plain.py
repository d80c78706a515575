"""dist/install.yaml on the real control plane: `kubectl apply -f` creates the operator exactly as the
CSV describes it (Deployment, ServiceAccount, rules), and `kubectl delete -f` leaves nothing.

The CRDs are shared with the other modules: afterwards they are applied again (operator_crds holds
the lock that serialises the modules using the operator's objects)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from cluster import REPO_ROOT, Cluster
from operator_fixtures import CRD_FILES, kubectl_json, must, operator_crds

__all__ = ["operator_crds"]  # fixture, imported for pytest

INSTALL = REPO_ROOT / "dist" / "install.yaml"
CSV_FILE = REPO_ROOT / "bundle" / "manifests" / "secrets-store-csi-py.clusterserviceversion.yaml"
NAMESPACE = "secrets-store-csi-driver"
OPERATOR = "secrets-store-csi-operator"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def _objects() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]


def _get(cluster: Cluster, obj: dict[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    group = obj["apiVersion"].rpartition("/")[0]
    resource = obj["kind"].lower() + (f".{group}" if group else "")
    scope = [] if obj["kind"] in CLUSTER_SCOPED else ["-n", meta["namespace"]]
    return kubectl_json(cluster, resource, meta["name"], *scope)


def _rules(rules: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], ...]]:
    keys = ("apiGroups", "resources", "resourceNames", "verbs", "nonResourceURLs")
    return sorted(tuple(tuple(sorted(rule.get(k) or [])) for k in keys) for rule in rules)


@pytest.mark.usefixtures("operator_crds")
def test_apply_creates_the_csv_operator_and_delete_leaves_nothing(cluster: Cluster) -> None:
    if kubectl_json(cluster, "deployment", OPERATOR, "-n", NAMESPACE) is not None:
        pytest.skip(f"{NAMESPACE}/{OPERATOR} already exists in this cluster: not ours to remove")
    csv = yaml.safe_load(CSV_FILE.read_text())["spec"]["install"]["spec"]
    try:
        must(cluster.kubectl("apply", "-f", str(INSTALL)))
        for obj in _objects():
            assert _get(cluster, obj) is not None, f"{obj['kind']} {obj['metadata']['name']} not created"

        [strategy] = csv["deployments"]
        deployment = kubectl_json(cluster, "deployment", OPERATOR, "-n", NAMESPACE)
        assert deployment is not None
        live, want = deployment["spec"]["template"]["spec"], strategy["spec"]["template"]["spec"]
        [container], [expected] = live["containers"], want["containers"]
        assert live["serviceAccountName"] == want["serviceAccountName"] == OPERATOR
        for key in ("image", "args", "env", "ports", "securityContext", "resources"):
            assert container[key] == expected[key], key
        assert deployment["spec"]["strategy"] == strategy["spec"]["strategy"]

        cluster_role = kubectl_json(cluster, "clusterrole", OPERATOR)
        role = kubectl_json(cluster, "role", OPERATOR, "-n", NAMESPACE)
        assert cluster_role is not None and role is not None
        [cluster_permissions], [permissions] = csv["clusterPermissions"], csv["permissions"]
        assert _rules(cluster_role["rules"]) == _rules(cluster_permissions["rules"])
        assert _rules(role["rules"]) == _rules(permissions["rules"])
        namespace = kubectl_json(cluster, "namespace", NAMESPACE)
        assert namespace is not None
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"

        must(cluster.kubectl("delete", "-f", str(INSTALL), "--wait", "--timeout=120s", timeout=180))
        deadline = time.monotonic() + 120
        left = [o for o in _objects() if _get(cluster, o) is not None]
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = [o for o in left if _get(cluster, o) is not None]
        assert not left, [f"{o['kind']} {o['metadata']['name']}" for o in left]
    finally:
        cluster.kubectl("delete", "-f", str(INSTALL), "--ignore-not-found", "--timeout=120s", timeout=180)
        for path in CRD_FILES:  # the other modules' CRDs, back as they were
            cluster.apply(path)
        for path in CRD_FILES:
            must(cluster.kubectl("wait", "--for=condition=Established", "-f", str(path), "--timeout=60s"))
