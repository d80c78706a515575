"""The ClusterCSIDriver and the driver's objects as the operator e2e tests read and write them."""

from __future__ import annotations

import copy
from typing import Any

from cluster import Cluster
from operator_fixtures import (
    CR_NAME,
    CR_RESOURCE,
    KWOK_LABEL,
    KWOK_NODES,
    OperatorProcess,
    kubectl_json,
    wait_until,
)

FINALIZER = "operator.secrets-store.csi.x-k8s.io/driver-cleanup"
MANAGED_BY = ("app.kubernetes.io/managed-by", "secrets-store-csi-operator")
DAEMONSET = "secrets-store-csi-driver-node"
SERVICE = "secrets-store-csi-driver-node-metrics"
SERVICE_ACCOUNT = "secrets-store-csi-driver-node-sa"
CSIDRIVER = "secrets-store.csi.k8s.io"
CLUSTER_ROLES = (
    "secretproviderclasses-role",
    "secretprovidersyncing-role",
    "secretproviderclasses-admin-role",
    "secretproviderclasses-viewer-role",
    "secretproviderclasspodstatuses-viewer-role",
)
BINDINGS = ("secretproviderclasses-rolebinding", "secretprovidersyncing-rolebinding")
BASE_SPEC: dict[str, Any] = {
    "driverConfig": {"secretsStore": {"nodePlacement": {"nodeSelector": {KWOK_LABEL: "true"}}}}
}


def spec_with(**fields: Any) -> dict[str, Any]:
    """BASE_SPEC plus `fields`: top-level spec fields, or `store` for driverConfig.secretsStore ones."""
    spec = copy.deepcopy(BASE_SPEC)
    spec["driverConfig"]["secretsStore"].update(fields.pop("store", {}))
    spec.update(fields)
    return spec


def apply_cr(cluster: Cluster, spec: dict[str, Any]) -> None:
    cluster.apply(
        {
            "apiVersion": "operator.secrets-store.csi.x-k8s.io/v1",
            "kind": "ClusterCSIDriver",
            "metadata": {"name": CR_NAME},
            "spec": spec,
        }
    )


def get_cr(cluster: Cluster) -> dict[str, Any] | None:
    return kubectl_json(cluster, CR_RESOURCE, CR_NAME)


def conditions(cr: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in ((cr or {}).get("status") or {}).get("conditions") or []}


def daemonset(cluster: Cluster, operator: OperatorProcess) -> dict[str, Any] | None:
    return kubectl_json(cluster, "daemonset", DAEMONSET, "-n", operator.namespace)


def driver_args(ds: dict[str, Any] | None) -> list[str]:
    if ds is None:
        return []
    [driver] = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "csi-driver"]
    args: list[str] = driver["args"]
    return args


def settled(cluster: Cluster, operator: OperatorProcess) -> dict[str, Any] | None:
    """The CR once the operator acted on its latest generation and the DaemonSet is rolled out."""
    cr = get_cr(cluster)
    ds = daemonset(cluster, operator)
    if cr is None or ds is None:
        return None
    status = ds.get("status") or {}
    found = conditions(cr)
    rolled_out = (
        status.get("observedGeneration") == ds["metadata"]["generation"]
        and status.get("desiredNumberScheduled") == len(KWOK_NODES)
        and status.get("updatedNumberScheduled") == len(KWOK_NODES)
        and status.get("numberAvailable") == len(KWOK_NODES)
    )
    healthy = (
        found.get("Available", {}).get("status") == "True"
        and found.get("Progressing", {}).get("status") == "False"
        and found.get("Degraded", {}).get("status") == "False"
    )
    current = cr.get("status", {}).get("observedGeneration") == cr["metadata"]["generation"]
    return cr if rolled_out and healthy and current else None


def wait_settled(cluster: Cluster, operator: OperatorProcess, timeout: float = 60) -> dict[str, Any]:
    cr: dict[str, Any] = wait_until(
        "the driver to be rolled out and Available", lambda: settled(cluster, operator), timeout
    )
    return cr


def ensure_settled(
    cluster: Cluster, operator: OperatorProcess, spec: dict[str, Any] = BASE_SPEC
) -> dict[str, Any]:
    apply_cr(cluster, spec)
    return wait_settled(cluster, operator)


def ensure_no_cr(cluster: Cluster) -> None:
    cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--ignore-not-found", "--wait=true", "--timeout=60s")
    assert get_cr(cluster) is None


def owned_by(obj: dict[str, Any], cr: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in refs] == [
        ("ClusterCSIDriver", CR_NAME, cr["metadata"]["uid"], True)
    ]


def labelled(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("labels", {}).get(MANAGED_BY[0]) == MANAGED_BY[1])
