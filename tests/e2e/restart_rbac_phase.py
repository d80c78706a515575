"""A phase of tests/e2e/test_csv_rbac.py: restart on rotation, run by the operator with the CSV's RBAC.

One annotated Deployment, StatefulSet and DaemonSet (pods on the kwok nodes); for one pod of each, an
SPCPS as the driver writes it (owned by the pod), then its versions change. The operator (its kopf
daemon, as the CSV's ServiceAccount) must restart all three, which exercises every rule restart needs:
SPCPS list/watch, pods get, replicasets get, get + patch of each workload kind, events create.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cluster import Cluster
from operator_fixtures import CR_NAME, CR_RESOURCE, KWOK_LABEL, kubectl_json, must, wait_until
from sscsi_operator.restart_policy import EVENT_REASON, RESTART_ANNOTATION, RESTARTED_AT_ANNOTATION

NAMESPACE = "sscsi-restart-rbac"
KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def _workload(kind: str) -> dict[str, Any]:
    name = f"restart-{kind.lower()}"
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "nodeSelector": {KWOK_LABEL: "true"},
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "app", "image": "local/busybox:1.35"}],
            },
        },
    }
    if kind != "DaemonSet":
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": {RESTART_ANNOTATION: "true"}},
        "spec": spec,
    }


def _status(pod: dict[str, Any], version: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClassPodStatus",
        "metadata": {
            "name": f"{meta['name']}-{NAMESPACE}-spc",
            "namespace": NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "status": {
            "podName": meta["name"],
            "secretProviderClassName": "spc",
            "mounted": True,
            "targetPath": f"/var/lib/kubelet/pods/{meta['uid']}/volumes/kubernetes.io~csi/s/mount",
            "objects": [{"id": "secret/foo", "version": version}],
        },
    }


def _pod_of(cluster: Cluster, kind: str) -> dict[str, Any] | None:
    pods = kubectl_json(cluster, "pods", "-n", NAMESPACE, "-l", f"app=restart-{kind.lower()}")
    items = [p for p in (pods or {}).get("items") or [] if not p["metadata"].get("deletionTimestamp")]
    return items[0] if items else None


def _restarted(cluster: Cluster, kind: str) -> bool:
    obj = kubectl_json(cluster, kind.lower(), f"restart-{kind.lower()}", "-n", NAMESPACE)
    annotations = (obj or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    return RESTARTED_AT_ANNOTATION in annotations


def exercise_restart_on_rotation(cluster: Cluster) -> None:
    """Rotation seen in SPCPS -> the operator restarts each annotated workload kind once."""
    rotation = {"type": "Custom", "custom": {"minimumRefreshAge": 5}}
    patch = {"spec": {"driverConfig": {"secretsStore": {"secretRotation": rotation}}}}
    must(cluster.kubectl("patch", CR_RESOURCE, CR_NAME, "--type=merge", "-p", json.dumps(patch)))
    must(cluster.kubectl("create", "namespace", NAMESPACE))
    try:
        cluster.apply([_workload(kind) for kind in KINDS])
        pods = {
            kind: wait_until(f"a pod of the {kind}", lambda k=kind: _pod_of(cluster, k), 60) for kind in KINDS
        }
        cluster.apply([_status(pod, "v1") for pod in pods.values()])
        wait_until(
            "the statuses to be listed",
            lambda: kubectl_json(cluster, "secretproviderclasspodstatuses", "-n", NAMESPACE),
            10,
        )
        time.sleep(2)  # the operator's watch has seen v1
        cluster.apply([_status(pod, "v2") for pod in pods.values()])
        for kind in KINDS:
            wait_until(f"the operator to restart the {kind}", lambda k=kind: _restarted(cluster, k), 60)
        events = kubectl_json(cluster, "events", "-n", NAMESPACE, f"--field-selector=reason={EVENT_REASON}")
        kinds = sorted(e["involvedObject"]["kind"] for e in (events or {}).get("items") or [])
        assert kinds == sorted(KINDS), kinds
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
