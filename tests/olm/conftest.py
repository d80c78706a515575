"""The OLM-live tier: OLM v0 installs, upgrades and uninstalls the operator on the real node.

Session setup (each step idempotent; warm reruns take seconds):
  1. hack/node-probe.sh (else every test SKIPs with its message)
  2. hack/node-up.sh: containerd (pulls through the loopback registry), the node's control plane,
     kubelet, kube-proxy, CoreDNS
  3. hack/olm-up.sh: OLM's CRDs, olm-operator, catalog-operator, package-server (from its CSV)
  4. hack/images.sh push: every image the bundle and the catalog name, under its public name
  5. leftovers of the node tier (which installs the operator without OLM) are removed
  6. the reference provider DaemonSet in kube-system

The tests then follow an admin's path in file order: catalog, install, driver, upgrade, kill,
uninstall. Take `flock /run/sscsi-node.lock` around a run (the node is shared).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import yaml
from node.nodekit import HACK, REPO, Kube, wait_for
from olmkit import (
    APP_NS,
    CR_NAME,
    LOGS_DIR,
    MANAGED_BY,
    NAMESPACE,
    OLM_NS,
    PROVIDER_APP,
    PROVIDER_NS,
    App,
    Live,
    provider_daemonset,
    push_images,
    run,
    save_logs,
)

OLM_DIR = Path(__file__).resolve().parent
# Images the bundle's CSV and the catalog name, plus what the tests run.
FORCE_REMOVAL = "operator.secrets-store.csi.x-k8s.io/force-removal"
PUSHED = ("driver", "operator", "provider", "livenessprobe", "busybox", "bundle", "catalog")


def _is_olm_test(item: pytest.Item) -> bool:
    return item.path.resolve().is_relative_to(OLM_DIR)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_olm_test(item):
            item.add_marker(pytest.mark.olm)
            # The first test pays for the bring-up (builds, node, OLM): minutes when cold.
            item.add_marker(pytest.mark.timeout(2400))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "olm: needs OLM on the real node (hack/olm-up.sh)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _is_olm_test(item):
        report.sections.append(("logs", f"node + OLM: {LOGS_DIR} (pods: {LOGS_DIR / 'olm-pods'})"))
    return report


@pytest.fixture(scope="session")
def node_lock() -> Iterator[None]:
    """One real-node session per machine (tests/node takes the same lock)."""
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


def _clean_slate(kube: Kube) -> None:
    """Start from a cluster without the product: an earlier session's OLM install, or the node
    tier's (it installs the operator without OLM, in the same namespace), is removed."""
    for ns in (APP_NS, "demo"):
        kube.run("delete", "namespace", ns, "--ignore-not-found", "--timeout=120s", timeout=150)
    if kube.exists("crd", "clustercsidrivers.operator.secrets-store.csi.x-k8s.io") and kube.exists(
        "clustercsidriver", CR_NAME
    ):
        kube.run("annotate", "clustercsidriver", CR_NAME, f"{FORCE_REMOVAL}=true", "--overwrite")
        kube.delete("clustercsidriver", CR_NAME, wait=False)
        try:
            wait_for("the ClusterCSIDriver to go", lambda: not kube.exists("clustercsidriver", CR_NAME), 90)
        except AssertionError:
            kube.run(
                "patch", "clustercsidriver", CR_NAME, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
            )
    kube.run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=180s", timeout=200)
    # The node tier's dist/install.yaml: its namespaced objects went with the namespace; its cluster RBAC
    # has the names OLM gives nothing. Its CRDs stay: OLM takes them over (same names, same content).
    for item in yaml.safe_load_all((REPO / "dist" / "install.yaml").read_text()):
        if item and item["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            kube.run("delete", item["kind"].lower(), item["metadata"]["name"], "--ignore-not-found")
    kube.run("delete", "csidriver,clusterrole,clusterrolebinding", "-l", MANAGED_BY, "--ignore-not-found")


@pytest.fixture(scope="session")
def live(node_lock: None) -> Iterator[Live]:
    cluster_dir = os.environ.get("SSCSI_NODE_CLUSTER_DIR", "/tmp/sscsi-node-cluster")
    os.environ["SSCSI_NODE_CLUSTER_DIR"] = cluster_dir
    probe = subprocess.run([str(HACK / "node-probe.sh")], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("OLM-live tier: this machine cannot run the real node: " + " ".join(probe.stdout.split()))
    try:
        kubeconfig = run([str(HACK / "node-up.sh")], "hack/node-up.sh", 1800).strip().splitlines()[-1]
        run([str(HACK / "olm-up.sh")], "hack/olm-up.sh", 1200)
        images = push_images(*PUSHED)
    except AssertionError as err:
        pytest.fail(str(err), pytrace=False)
    kube = Kube(Path(kubeconfig))
    _clean_slate(kube)
    kube.apply(provider_daemonset(images["provider"]))
    kube.run(
        "rollout", "status", "-n", PROVIDER_NS, f"daemonset/{PROVIDER_APP}", "--timeout=180s", timeout=200
    )
    node_name = kube.get("nodes")["items"][0]["metadata"]["name"]
    yield Live(kube, images, node_name)
    save_logs(kube, (NAMESPACE, OLM_NS, PROVIDER_NS))


@pytest.fixture(scope="session")
def app(live: Live) -> Iterator[App]:
    """One application pod for the session: it keeps running through the upgrade."""
    a = App(live.kube)
    if not live.kube.exists("pod", a.name, a.namespace):
        a.rotate(False)
        a.start(live.images["busybox"])
    yield a
    live.kube.run("delete", "namespace", a.namespace, "--ignore-not-found", "--wait=false")
