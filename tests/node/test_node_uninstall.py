"""Uninstall: deleting the ClusterCSIDriver removes everything the operator created.

Each test starts from an installed driver (the `installation` fixture installs it again when an
earlier test removed it) and leaves it removed; the next test's `installation` puts it back.
"""

from __future__ import annotations

from nodekit import DRIVER_NAME, Kube, app_pod_spec, host_mounts_under, spc, wait_for, wait_pod_ready
from nodesetup import (
    CR_NAME,
    DRIVER_APP,
    OPERATOR_NAMESPACE,
    Installation,
    csinode_has_driver,
    daemonset_ready,
)

MANAGED = "app.kubernetes.io/managed-by=secrets-store-csi-operator"


def _uninstall_and_check(kube: Kube) -> None:
    kube.delete("clustercsidriver", CR_NAME, wait=False)
    wait_for(
        "the ClusterCSIDriver to go (finalizer handled)",
        lambda: not kube.exists("clustercsidriver", CR_NAME),
        120,
    )
    wait_for(
        "the driver DaemonSet to go", lambda: not kube.exists("daemonset", DRIVER_APP, OPERATOR_NAMESPACE), 60
    )
    wait_for("the driver pods to go", lambda: not kube.pods(OPERATOR_NAMESPACE, f"app={DRIVER_APP}"), 120)
    assert not kube.exists("csidriver", DRIVER_NAME)
    for kind in ("clusterroles", "clusterrolebindings"):
        assert kube.run("get", kind, "-l", MANAGED, "-o", "name").strip() == "", kind
    for kind in ("serviceaccounts", "services", "daemonsets"):
        assert kube.run("get", kind, "-n", OPERATOR_NAMESPACE, "-l", MANAGED, "-o", "name").strip() == "", (
            kind
        )
    wait_for("kubelet to unregister the driver (CSINode)", lambda: not csinode_has_driver(kube), 120)


def test_uninstall_removes_everything(installation: Installation) -> None:
    _uninstall_and_check(installation.kube)


def test_uninstall_with_a_pod_using_the_driver_is_reported(installation: Installation, ns: str) -> None:
    """Deleting the ClusterCSIDriver while a pod reads its secret: removal waits (the driver keeps
    serving), the ClusterCSIDriver names the pod; once the pod stops, kubelet unmounts through the
    driver and removal completes."""
    kube = installation.kube
    kube.apply(spc("e2e-provider"), ns)
    pod = "still-using-the-driver"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": app_pod_spec([("secrets-store-inline", "e2e-provider", "/mnt/secrets-store")]),
        },
        ns,
    )
    wait_pod_ready(kube, pod, ns)
    uid = kube.get("pod", pod, ns)["metadata"]["uid"]
    kube.delete("clustercsidriver", CR_NAME, wait=False)

    def waiting_for_the_pod() -> bool:
        cr = kube.get("clustercsidriver", CR_NAME)
        progressing = [c for c in cr.get("status", {}).get("conditions") or [] if c["type"] == "Progressing"]
        return bool(
            progressing
            and progressing[0]["reason"] == "WaitingForPods"
            and f"{ns}/{pod}" in progressing[0]["message"]
        )

    wait_for("Progressing=WaitingForPods naming the pod", waiting_for_the_pod, 60)
    warnings = [
        e["message"]
        for e in kube.get("events", "", None, "-A")["items"]
        if e["involvedObject"].get("kind") == "ClusterCSIDriver" and e["reason"] == "WaitingForPods"
    ]
    assert any(f"{ns}/{pod}" in message for message in warnings), warnings
    # Nothing was removed: the pod still reads its secret through the registered driver.
    assert daemonset_ready(kube, DRIVER_APP, OPERATOR_NAMESPACE) and csinode_has_driver(kube)
    assert kube.exec(pod, ns, "cat", "/mnt/secrets-store/foo") == "secret"

    # The pod stops: kubelet unmounts through the driver, then removal proceeds on its own.
    kube.delete("pod", pod, ns, wait=False)
    pod_dir = f"/var/lib/kubelet/pods/{uid}"
    wait_for("the pod's volume to be unmounted", lambda: not host_mounts_under(pod_dir), 120)
    wait_for("the pod to go", lambda: not kube.exists("pod", pod, ns), 120)
    _uninstall_and_check(kube)
