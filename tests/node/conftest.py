"""The real-node tier: a real kubelet and containerd run the operator-deployed driver and real pods.

Session setup, in order (each step idempotent; a warm rerun takes seconds):
  1. hack/node-probe.sh: the machine can run it, else every test SKIPs naming what is missing
  2. hack/node-up.sh: containerd, the node's own control plane (/tmp/sscsi-node-cluster), kubelet
  3. hack/images.sh import: every image built by buildah from images/*.Dockerfile (pause, busybox,
     driver, operator, provider, livenessprobe from its upstream release source, the upstream
     driver's own e2e provider), imported into containerd
  4. the reference provider and upstream's e2e provider as DaemonSets on
     /var/run/secrets-store-csi-providers (sockets e2e-provider.sock, upstream-e2e-provider.sock)
  5. the operator as a cluster without OLM installs it: one `kubectl apply -f dist/install.yaml`, only
     its image references swapped for step 3's (nodesetup.install_manifest); an OLM install the OLM
     tier left on the node is removed first
Then before every test (`installation`): the operator again if an uninstall test deleted the manifest,
a ClusterCSIDriver, the operator's DaemonSet Ready and registered with kubelet (nodesetup.install_driver;
seconds when it already is). So each test module runs alone and in any order, the uninstall tests
included. What is installed, and the names tests use: nodesetup.py.

The node keeps running after the session (hack/node-down.sh stops it). Logs: the failing test's
report names $SSCSI_NODE_CLUSTER_DIR/logs (containerd, kubelet, control plane) and the pods'
logs are saved there at the end of the session.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from chaos.faults import ChaosNode
from node import nodekit as kit
from nodekit import CLUSTER_DIR, HACK, Kube
from nodesetup import (
    LOGS_DIR,
    Installation,
    Node,
    install_driver,
    install_operator,
    install_providers,
    operator_present,
    save_logs,
)

NODE_DIR = Path(__file__).resolve().parent


def _is_node_test(item: pytest.Item) -> bool:
    return item.path.resolve().is_relative_to(NODE_DIR)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_node_test(item):
            item.add_marker(pytest.mark.node)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "node: needs a real kubelet + containerd (hack/node-up.sh)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _is_node_test(item):
        report.sections.append(("node logs", f"kubelet, containerd, control plane, pods: {LOGS_DIR}"))
    return report


def _run(cmd: list[str], what: str, timeout: float) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        pytest.fail(f"{what} failed ({r.returncode}):\n{r.stderr[-6000:]}", pytrace=False)
    return r.stdout


@pytest.fixture(scope="session")
def node_lock() -> Iterator[None]:
    """One real-node session per machine: the node (kubelet, containerd, /var/lib/kubelet) is host-wide."""
    with open("/run/sscsi-node-tier.lock", "w") as lock:
        deadline = time.monotonic() + 1800
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another real-node session held /run/sscsi-node-tier.lock for 30 minutes")
                time.sleep(2)
        yield


@pytest.fixture(scope="session")
def node(node_lock: None) -> Node:
    # hack/lib-node.sh reads SSCSI_NODE_CLUSTER_DIR (not the shared cluster's SSCSI_CLUSTER_DIR).
    os.environ["SSCSI_NODE_CLUSTER_DIR"] = str(CLUSTER_DIR)
    probe = subprocess.run([str(HACK / "node-probe.sh")], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(
            "real-node tier: this machine cannot run it: " + "; ".join(probe.stdout.split("\n")).strip("; ")
        )
    kubeconfig = _run([str(HACK / "node-up.sh")], "hack/node-up.sh", timeout=900).strip().splitlines()[-1]
    images = json.loads(_run([str(HACK / "images.sh"), "import"], "hack/images.sh import", 1800))
    return Node(Kube(Path(kubeconfig)), images)


@pytest.fixture(scope="session")
def operator_installed(node: Node) -> Iterator[Node]:
    """Both providers and the operator (dist/install.yaml: applied once per session whatever an earlier
    session left, e.g. other images or an OLM install); the pods' logs are saved at the end."""
    install_providers(node.kube, node.images)
    install_operator(node.kube, node.images)
    yield node
    save_logs(node.kube)


@pytest.fixture
def installation(operator_installed: Node) -> Installation:
    """The operator and the driver installed and registered, whatever ran before (an uninstall test
    that deleted dist/install.yaml included)."""
    kube = operator_installed.kube
    if not operator_present(kube):
        install_operator(kube, operator_installed.images)
    install_driver(kube)
    return Installation(kube, operator_installed.images)


@pytest.fixture
def ns(node: Node) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its pods unmount through the driver)."""
    name = f"node-{uuid.uuid4().hex[:8]}"
    node.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    # Waited for: the pods' volumes are torn down through the driver while it is still installed.
    node.kube.run("delete", "namespace", name, "--ignore-not-found", "--timeout=120s", timeout=150)


@pytest.fixture
def chaos_node(installation: Installation) -> ChaosNode:
    """What the chaos faults need, on the installed node (they speak node.nodekit, the runner's import
    path, not this tier's bare `nodekit`)."""
    return ChaosNode(kit.Kube(installation.kube.kubeconfig))
