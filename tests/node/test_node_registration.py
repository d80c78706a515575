"""The driver registers itself with the real kubelet, and a registration kubelet refuses is retried
without a restart: the defect chaos seed 20 found. With node-driver-registrar, a driver container that
started while the apiserver was down (kubelet cannot write CSINode, so it refuses the registration) was
followed by the registrar exiting and kubelet's crash-loop back-off keeping the driver unknown for
minutes. Here the apiserver is stopped, the driver container killed, kubelet's refusal seen in the
driver's own log, the apiserver started: the same driver process registers again and a new pod mounts.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from chaos.faults import ChaosNode
from chaos.logscan import POD_LOGS
from nodekit import NODE_NAME, KubectlError, app_pod_spec, spc, wait_for, wait_pod_ready
from nodesetup import OPERATOR_NAMESPACE, Installation

REFUSED = "kubelet refused the registration; registering again"
REGISTERED = "registered with kubelet"
MOUNT = "/mnt/secrets-store"


@pytest.fixture
def apiserver_back(chaos_node: ChaosNode) -> Iterator[None]:
    """Whatever the test does, the apiserver serves again afterwards."""
    yield
    chaos_node.node_component("start", "kube-apiserver", timeout=200)


def driver_log(pod_uid: str) -> str:
    """Every csi-driver container log of the pod, read on the host: works while the apiserver is down."""
    files = sorted(POD_LOGS.glob(f"{OPERATOR_NAMESPACE}_*_{pod_uid}/csi-driver/*.log"))
    return "".join(f.read_text(errors="replace") for f in files)


def restart_count(installation: Installation, pod_name: str) -> int:
    pod = installation.kube.get("pod", pod_name, OPERATOR_NAMESPACE)
    return next(s["restartCount"] for s in pod["status"]["containerStatuses"] if s["name"] == "csi-driver")


def test_refused_registration_is_retried_by_the_running_driver(
    installation: Installation, chaos_node: ChaosNode, ns: str, apiserver_back: None
) -> None:
    pod = installation.driver_pod()
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    restarts = restart_count(installation, name)
    refusals_before = driver_log(uid).count(REFUSED)

    chaos_node.node_component("kill", "kube-apiserver", timeout=30)
    victim = chaos_node.wait_container(chaos_node.driver)
    os.kill(victim.pid, signal.SIGKILL)  # kubelet starts it again and registers it: CSINode unwritable
    wait_for(
        "kubelet to refuse the new driver's registration (apiserver down)",
        lambda: driver_log(uid).count(REFUSED) > refusals_before or None,
        timeout=120,
    )
    restarted = chaos_node.wait_container(chaos_node.driver, timeout=30)
    chaos_node.node_component("start", "kube-apiserver", timeout=200)

    def registered_again() -> bool | None:
        log = driver_log(uid)
        return REGISTERED in log[log.rfind(REFUSED) :] or None

    wait_for("the running driver to register again once the apiserver serves", registered_again, timeout=180)
    still = chaos_node.wait_container(chaos_node.driver, timeout=30)
    assert still.pid == restarted.pid, "the driver process was restarted instead of registering again"
    # kubelet reports the pod's status once the apiserver serves again: the kill above, no other restart
    wait_for(
        "kubelet to report the driver's restart",
        lambda: restart_count(installation, name) > restarts or None,
        timeout=120,
    )
    assert restart_count(installation, name) == restarts + 1
    wait_for("the driver pod to be Ready", lambda: _driver_ready(installation, name) or None, timeout=60)

    installation.kube.apply(spc("registration-spc", objects=("foo",)), ns)
    pod_spec = app_pod_spec([("secrets", "registration-spc", MOUNT)])
    pod_spec["nodeName"] = NODE_NAME  # kubelet and the driver are the subject, not the scheduler's reconnect
    reader = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"}, "spec": pod_spec}
    installation.kube.apply(reader, ns)
    wait_pod_ready(installation.kube, "reader", ns, timeout=180)
    assert installation.kube.exec("reader", ns, "cat", f"{MOUNT}/foo")


def _driver_ready(installation: Installation, pod_name: str) -> bool:
    try:
        pod = installation.kube.get("pod", pod_name, OPERATOR_NAMESPACE)
    except KubectlError:
        return False
    return any(s["name"] == "csi-driver" and s["ready"] for s in pod["status"].get("containerStatuses", []))
