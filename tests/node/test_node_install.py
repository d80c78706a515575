"""The operator, started as a pod from its image, deploys the driver; the driver registers itself with
kubelet (plugin registration API), and upstream's livenessprobe answers for the driver's Probe."""

from __future__ import annotations

import os
import stat

from nodekit import BUSYBOX_IMAGE, DRIVER_NAME, NODE_NAME, VERSIONS, http_get
from nodesetup import (
    DRIVER_APP,
    OPERATOR_NAMESPACE,
    PROVIDER_APP,
    PROVIDER_NAMESPACE,
    UPSTREAM_PROVIDER,
    UPSTREAM_PROVIDER_APP,
    Installation,
)

PLUGINS_REGISTRY = "/var/lib/kubelet/plugins_registry"


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
        installation.images["livenessprobe"],
    }
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])


def test_sidecar_is_the_upstream_release(installation: Installation) -> None:
    """The one sidecar left, livenessprobe, is the upstream release pinned in hack/versions.env."""
    pod = installation.driver_pod()
    images = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
    assert list(images) == ["csi-driver", "csi-liveness-probe"]
    assert images["csi-liveness-probe"].endswith(f"/livenessprobe:{VERSIONS['LIVENESSPROBE_VERSION']}")


def test_busybox_is_the_built_image(installation: Installation) -> None:
    assert installation.images["busybox"] == BUSYBOX_IMAGE


def test_kubelet_registered_the_driver(installation: Installation) -> None:
    """The real registration path: the driver's own registration socket in kubelet's plugin watcher
    directory, kubelet's GetInfo then NotifyRegistrationStatus(plugin_registered) logged by the driver,
    the driver container Ready (its /readyz answers 200 only after that), the CSINode entry."""
    reg_sock = f"{PLUGINS_REGISTRY}/{DRIVER_NAME}-reg.sock"
    assert stat.S_ISSOCK(os.stat(reg_sock).st_mode)
    log = installation.driver_container_logs("csi-driver")
    assert "registered with kubelet" in log, log[-2000:]
    pod = installation.driver_pod()
    driver = next(c for c in pod["spec"]["containers"] if c["name"] == "csi-driver")
    assert driver["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": "HTTP"}
    ready = {s["name"]: s["ready"] for s in pod["status"]["containerStatuses"]}
    assert ready["csi-driver"] is True
    csinode = installation.kube.get("csinode", NODE_NAME)
    assert [d["nodeID"] for d in csinode["spec"]["drivers"] if d["name"] == DRIVER_NAME] == [NODE_NAME]
    csidriver = installation.kube.get("csidriver", DRIVER_NAME)
    assert csidriver["spec"]["volumeLifecycleModes"] == ["Ephemeral"]
    assert csidriver["spec"]["podInfoOnMount"] is True


def test_provider_serves_on_the_provider_socket_dir(installation: Installation) -> None:
    for app, provider in ((PROVIDER_APP, "e2e-provider"), (UPSTREAM_PROVIDER_APP, UPSTREAM_PROVIDER)):
        pod = installation.provider_pod(app)
        assert pod["metadata"]["namespace"] == PROVIDER_NAMESPACE
        assert stat.S_ISSOCK(os.stat(f"/var/run/secrets-store-csi-providers/{provider}.sock").st_mode)
    upstream = installation.provider_pod(UPSTREAM_PROVIDER_APP)["spec"]["containers"][0]["image"]
    assert upstream == installation.images["upstream-provider"]


def test_driver_liveness_sidecar(installation: Installation) -> None:
    """livenessprobe's /healthz is the driver's CSI Probe: it found the driver by GetPluginInfo on
    the driver's socket, and kubelet's liveness checks through it never restarted the driver."""
    pod = installation.driver_pod()
    assert DRIVER_APP in pod["metadata"]["name"]
    assert http_get(f"http://{pod['status']['podIP']}:9808/healthz") == "ok"
    log = installation.driver_container_logs("csi-liveness-probe")
    assert f'"CSI driver name" driver="{DRIVER_NAME}"' in log, log[:2000]
    driver = next(c for c in pod["spec"]["containers"] if c["name"] == "csi-driver")
    assert driver["livenessProbe"]["httpGet"]["port"] in (9808, "healthz")
    restarts = {s["name"]: s["restartCount"] for s in pod["status"]["containerStatuses"]}
    assert restarts["csi-driver"] == 0
