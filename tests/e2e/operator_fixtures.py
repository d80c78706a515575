"""Fixtures for the operator's e2e tests: kwok nodes, the CRDs, and the operator as a real process
running with the least-privilege RBAC of assets/operator/rbac.yaml."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import REPO_ROOT, Cluster
from harness.processes import free_port

OPERATOR_BIN = Path(sys.executable).parent / "secrets-store-csi-operator"
CRD_FILES = (
    REPO_ROOT / "assets" / "crds",
    REPO_ROOT / "assets" / "operator" / "operator.secrets-store.csi.x-k8s.io_clustercsidrivers.yaml",
)
OPERATOR_RBAC = REPO_ROOT / "assets" / "operator" / "rbac.yaml"
CR_NAME = "secrets-store.csi.k8s.io"
CR_RESOURCE = "clustercsidrivers.operator.secrets-store.csi.x-k8s.io"
KWOK_NODES = ("sscsi-kwok-1", "sscsi-kwok-2")
KWOK_LABEL = "sscsi.test/kwok"
OPERATOR_SA = "secrets-store-csi-operator"
MANAGED = "app.kubernetes.io/managed-by=secrets-store-csi-operator"
CHILD_KINDS = "daemonsets,services,serviceaccounts"
CLUSTER_CHILD_KINDS = (
    "csidrivers,clusterroles,clusterrolebindings,"
    "validatingadmissionpolicies,validatingadmissionpolicybindings"
)
# How long a module waits for another run's operator tests (within pytest's per-test timeout).
LOCK_WAIT_SECONDS = 270
# The periodic pass of the operator under test; drift must be repaired within about this.
RESYNC_SECONDS = 3.0
IMAGES = {
    "DRIVER_IMAGE": "example.invalid/sscsi/driver:e2e",
    "LIVENESS_PROBE_IMAGE": "example.invalid/sscsi/livenessprobe:e2e",
}


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}", pytrace=False)
        time.sleep(interval)


def kubectl_json(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    """`kubectl get ... -o json`, or None when the object does not exist."""
    out = cluster.kubectl("get", *args, "-o", "json", timeout=30)
    if out.returncode != 0:
        if "NotFound" in out.stderr or "not found" in out.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)}: {out.stderr.strip()}")
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def must(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if out.returncode != 0:
        raise AssertionError(f"kubectl failed ({out.returncode}): {out.stderr.strip()}")
    return out


@dataclass
class OperatorProcess:
    """The operator under test; restartable, with every run appended to one log file."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    liveness_url: str
    namespace: str = ""  # the operator's, which is also the driver's
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, "already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        wait_until("the operator's liveness endpoint", self.live, timeout=30)

    def live(self) -> bool:
        import urllib.error
        import urllib.request

        if self.popen is None or self.popen.poll() is not None:
            raise AssertionError(f"the operator exited; log:\n{self.log()[-4000:]}")
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer handling, like a node failure or an OOM kill."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def kill_when_logged(self, text: str, since: int, timeout: float = 20.0) -> None:
        """SIGKILL as soon as `text` appears in the log after offset `since`: mid-way through that work."""

        def logged() -> bool:
            with open(self.log_path, "rb") as log:
                log.seek(since)
                return text.encode() in log.read()

        wait_until(f"{text!r} in the operator log", logged, timeout=timeout, interval=0.01)
        self.kill()


@pytest.fixture(scope="module")
def kwok_nodes(cluster: Cluster) -> Iterator[tuple[str, ...]]:
    """Two fake nodes (kwok makes them Ready and their pods Running/Ready), tainted so that only
    pods tolerating every taint (like the driver's DaemonSet) land there."""
    script = REPO_ROOT / "hack" / "kwok.sh"
    out = subprocess.run(
        [str(script), "up"], env=dict(cluster.env), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"hack/kwok.sh up failed:\n{out.stderr}", pytrace=False)
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {KWOK_LABEL: "true", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name},
            },
            "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
        }
        for name in KWOK_NODES
    ]
    cluster.apply(nodes)

    def ready() -> bool:
        for name in KWOK_NODES:
            node = kubectl_json(cluster, "node", name) or {}
            conditions = node.get("status", {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True

    wait_until("the kwok nodes to be Ready", ready, timeout=30)
    try:
        yield KWOK_NODES
    finally:
        cluster.kubectl("delete", "node", *KWOK_NODES, "--ignore-not-found", "--wait=false")
        subprocess.run([str(script), "down"], env=dict(cluster.env), capture_output=True, check=False)


@pytest.fixture(scope="module")
def operator_crds(cluster: Cluster) -> Iterator[None]:
    """The CRDs, and the cluster's ClusterCSIDriver to this module alone: the CR is a singleton, so
    two pytest runs (other sessions share the cluster) would each see the other's operator at work.
    A flock in the cluster directory serialises the modules that use it."""
    with open(cluster.cluster_dir / "operator-e2e.lock", "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"another pytest run has used the ClusterCSIDriver for {LOCK_WAIT_SECONDS}s "
                        f"({lock.name}); run again when it is done",
                        pytrace=False,
                    )
                time.sleep(1)
        for path in CRD_FILES:
            cluster.apply(path)
        must(cluster.kubectl("wait", "--for=condition=Established", f"crd/{CR_RESOURCE}", "--timeout=30s"))
        yield


def release_cr(cluster: Cluster, process: OperatorProcess) -> None:
    """Delete the ClusterCSIDriver while an operator runs, so its finalizer is released."""
    if kubectl_json(cluster, CR_RESOURCE, CR_NAME) is not None:
        if process.popen is None or process.popen.poll() is not None:
            process.start()
        cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=true", "--timeout=60s")


def remove_leftovers(cluster: Cluster) -> None:
    """What a crashed earlier run may have left: the CR (finalizer stripped) and labelled children."""
    if kubectl_json(cluster, CR_RESOURCE, CR_NAME) is not None:
        cluster.kubectl(
            "patch", CR_RESOURCE, CR_NAME, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )
        cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--ignore-not-found", "--wait=true", "--timeout=30s")
    cluster.kubectl("delete", CLUSTER_CHILD_KINDS, "-l", MANAGED, "--ignore-not-found")
    cluster.kubectl("delete", CHILD_KINDS, "-A", "-l", MANAGED, "--ignore-not-found", "--wait=false")


def _operator_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> None:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a bound token)."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    [cluster_entry] = admin["clusters"]
    token = must(cluster.kubectl("create", "token", OPERATOR_SA, "-n", namespace, "--duration=2h")).stdout
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sscsi", "cluster": cluster_entry["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token.strip()}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": "sscsi", "user": "operator", "namespace": namespace}}
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, kwok_nodes: tuple[str, ...], operator_crds: None) -> Iterator[OperatorProcess]:
    """The operator in its own namespace (which is also the driver's), as its ServiceAccount."""
    remove_leftovers(cluster)
    namespace = f"sscsi-operator-e2e-{secrets.token_hex(3)}"
    binding = f"secrets-store-csi-operator-{namespace}"
    must(cluster.kubectl("create", "namespace", namespace))
    must(cluster.kubectl("create", "serviceaccount", OPERATOR_SA, "-n", namespace))
    cluster.apply(OPERATOR_RBAC, namespace=namespace)
    must(
        cluster.kubectl(
            "create",
            "clusterrolebinding",
            binding,
            f"--clusterrole={OPERATOR_SA}",
            f"--serviceaccount={namespace}:{OPERATOR_SA}",
        )
    )
    must(
        cluster.kubectl(
            "create",
            "rolebinding",
            OPERATOR_SA,
            "-n",
            namespace,
            f"--role={OPERATOR_SA}",
            f"--serviceaccount={namespace}:{OPERATOR_SA}",
        )
    )
    workdir = cluster.logs_dir / "operator-e2e"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "operator.kubeconfig"
    _operator_kubeconfig(cluster, namespace, kubeconfig)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"} | IMAGES
    process = OperatorProcess(
        argv=[
            str(OPERATOR_BIN),
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            f"--resync-interval={RESYNC_SECONDS}",
        ],
        env=env,
        namespace=namespace,
        log_path=workdir / "operator.log",
        liveness_url=f"http://127.0.0.1:{port}/healthz",
    )
    process.log_path.unlink(missing_ok=True)
    process.start()
    try:
        yield process
    finally:
        try:
            release_cr(cluster, process)
        finally:
            process.stop()
            remove_leftovers(cluster)
            cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")
            cluster.kubectl("delete", "clusterrole", OPERATOR_SA, "--ignore-not-found")
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
