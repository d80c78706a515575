"""Uninstall: deleting the ClusterCSIDriver removes everything the operator created; then
`kubectl delete -f dist/install.yaml` removes the rest, and applying it again installs from nothing.

The uninstall tests start from an installed driver (the `installation` fixture installs the operator
and the driver again when an earlier test removed them) and leave it removed; the next test's
`installation` puts it back, the last test here installs from nothing itself. Deleting the manifest
deletes its CRDs and so every SecretProviderClass on the cluster: no other test runs meanwhile, and
each test makes its own SPCs.
"""

from __future__ import annotations

from typing import Any

from nodekit import DRIVER_NAME, Kube, app_pod_spec, host_mounts_under, spc, wait_for, wait_pod_ready
from nodesetup import (
    CR_NAME,
    DRIVER_APP,
    OPERATOR_NAMESPACE,
    Installation,
    Node,
    csinode_has_driver,
    daemonset_ready,
    install_driver,
    install_operator,
    manifest_objects,
    write_install_manifest,
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


def _manifest_objects_left(kube: Kube) -> list[str]:
    """The objects of dist/install.yaml still on the cluster (kind/name)."""

    def exists(doc: dict[str, Any]) -> bool:
        group = str(doc["apiVersion"]).rpartition("/")[0]
        kind = str(doc["kind"]).lower()
        return kube.exists(
            f"{kind}.{group}" if group else kind, doc["metadata"]["name"], doc["metadata"].get("namespace")
        )

    return [f"{d['kind']}/{d['metadata']['name']}" for d in manifest_objects() if exists(d)]


def _delete_manifest(kube: Kube, images: dict[str, str]) -> None:
    """`kubectl delete -f` of the manifest the tier applied; then none of its objects is left."""
    kube.run("delete", "-f", str(write_install_manifest(images)), "--wait", "--timeout=180s", timeout=240)
    wait_for("none of dist/install.yaml's objects left", lambda: not _manifest_objects_left(kube), 120)


def _pod_reading_its_secret(kube: Kube, ns: str, pod: str) -> str:
    """A pod mounting the reference provider's secret, Ready and reading it; its uid."""
    kube.apply(spc("e2e-provider"), ns)
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
    assert kube.exec(pod, ns, "cat", "/mnt/secrets-store/foo") == "secret"
    return str(kube.get("pod", pod, ns)["metadata"]["uid"])


def test_uninstall_removes_everything(installation: Installation) -> None:
    _uninstall_and_check(installation.kube)


def test_full_uninstall_with_a_pod_using_the_driver(installation: Installation, ns: str) -> None:
    """The documented uninstall while a pod reads its secret. Deleting the ClusterCSIDriver: removal
    waits (the driver keeps serving), the ClusterCSIDriver names the pod; once the pod stops, kubelet
    unmounts through the driver and removal completes. Then `kubectl delete -f dist/install.yaml`
    (the same manifest the tier applied) leaves none of its objects: namespace, CRDs, cluster RBAC."""
    kube = installation.kube
    pod = "still-using-the-driver"
    uid = _pod_reading_its_secret(kube, ns, pod)
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

    _delete_manifest(kube, installation.images)
    assert not kube.exists("csidriver", DRIVER_NAME)
    assert kube.run("get", "clusterroles,clusterrolebindings", "-l", MANAGED, "-o", "name").strip() == ""


def test_apply_on_a_cluster_without_it_installs_again(operator_installed: Node, ns: str) -> None:
    """From a cluster holding none of the manifest's objects (left so by the test above; when this test
    runs alone, it uninstalls first the same way): one `kubectl apply -f`, a ClusterCSIDriver, and a pod
    reads its secret."""
    kube = operator_installed.kube
    if _manifest_objects_left(kube):
        _uninstall_and_check(kube)
        _delete_manifest(kube, operator_installed.images)
    install_operator(kube, operator_installed.images)
    install_driver(kube)
    _pod_reading_its_secret(kube, ns, "after-reinstall")
