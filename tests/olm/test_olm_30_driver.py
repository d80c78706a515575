"""Scenario 3: the ClusterCSIDriver makes the operator deploy the driver; an application pod reads
its secret from the reference provider, and the file rotates inside the running container.

The application pod stays running for the upgrade scenario (module-scoped in conftest: `app`)."""

from __future__ import annotations

from node.nodekit import DRIVER_NAME, wait_for
from olmkit import CR_NAME, App, Live, cluster_csi_driver, csinode_has_driver, daemonset_ready


def test_cluster_csi_driver_deploys_the_driver(live: Live) -> None:
    kube = live.kube
    kube.apply(cluster_csi_driver())
    wait_for("the driver DaemonSet ready", lambda: daemonset_ready(kube), 300, interval=2)
    wait_for(
        "kubelet to register the driver (CSINode)", lambda: csinode_has_driver(kube, live.node_name), 120
    )
    assert kube.exists("csidriver", DRIVER_NAME)
    cr = kube.get("clustercsidriver", CR_NAME)
    conditions = {c["type"]: c["status"] for c in cr.get("status", {}).get("conditions", [])}
    wait_for(
        "the ClusterCSIDriver Available",
        lambda: (
            {
                c["type"]: c["status"] for c in kube.get("clustercsidriver", CR_NAME)["status"]["conditions"]
            }.get("Available")
            == "True"
        ),
        120,
    )
    assert conditions


def test_app_pod_reads_and_rotates(live: Live, app: App) -> None:
    assert app.read() == "secret"
    app.rotate(True)
    wait_for(
        "the mounted file to rotate in the running container",
        lambda: app.read() == "rotated",
        120,
        interval=2,
    )
