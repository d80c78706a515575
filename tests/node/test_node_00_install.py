"""The operator, started as a pod from its image, deploys the driver; kubelet registers it."""

from __future__ import annotations

from conftest import DRIVER_APP, OPERATOR_NAMESPACE, PROVIDER_APP, PROVIDER_NAMESPACE, Installation
from nodekit import DRIVER_NAME, NODE_NAME


def test_crds_established(installation: Installation) -> None:
    for crd in ("secretproviderclasses", "secretproviderclasspodstatuses"):
        doc = installation.kube.get("crd", f"{crd}.secrets-store.csi.x-k8s.io")
        conditions = {c["type"]: c["status"] for c in doc["status"]["conditions"]}
        assert conditions.get("Established") == "True", crd


def test_operator_runs_from_its_image(installation: Installation) -> None:
    pods = installation.kube.pods(OPERATOR_NAMESPACE, "app.kubernetes.io/name=secrets-store-csi-operator")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["containers"][0]["image"] == installation.images["operator"]
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])


def test_driver_daemonset_uses_local_images(installation: Installation) -> None:
    pod = installation.driver_pod()
    images = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
    assert set(images.values()) == {
        installation.images["driver"],
        installation.images["registrar"],
        installation.images["livenessprobe"],
    }
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])


def test_kubelet_registered_the_driver(installation: Installation) -> None:
    csinode = installation.kube.get("csinode", NODE_NAME)
    assert [d["nodeID"] for d in csinode["spec"]["drivers"] if d["name"] == DRIVER_NAME] == [NODE_NAME]
    csidriver = installation.kube.get("csidriver", DRIVER_NAME)
    assert csidriver["spec"]["volumeLifecycleModes"] == ["Ephemeral"]
    assert csidriver["spec"]["podInfoOnMount"] is True


def test_provider_serves_on_the_provider_socket_dir(installation: Installation) -> None:
    pod = installation.provider_pod()
    assert pod["metadata"]["labels"]["app"] == PROVIDER_APP
    assert pod["metadata"]["namespace"] == PROVIDER_NAMESPACE
    import os
    import stat

    assert stat.S_ISSOCK(os.stat("/var/run/secrets-store-csi-providers/e2e-provider.sock").st_mode)


def test_driver_liveness_sidecar(installation: Installation) -> None:
    from nodekit import http_get

    ip = installation.driver_pod()["status"]["podIP"]
    assert http_get(f"http://{ip}:9808/healthz") == "ok"
    assert DRIVER_APP in installation.driver_pod()["metadata"]["name"]
