"""The faults a chaos run injects on the real node, behind one small protocol.

The runner (tests/chaos) only sees `Fault`: `probe()` says whether this machine can produce it (None) or
why not (the reason is printed and the kind skipped), `inject()` starts it and returns within seconds,
`heal()` ends it (idempotent; a no-op for one-shot kills, which heal themselves through kubelet or the
Deployment). `max_seconds` is the longest a fault stays active once injected: the runner heals it by then
at the latest and adds it to its bounds. inject/heal are called from worker threads; faults of different
kinds may overlap, at most one per kind is active.

`node_faults(ChaosNode(kube))` lists one fault of every kind, in KINDS' order. Where they act:

- driver-kill, provider-kill, operator-kill: SIGKILL of the container's first process (faults_procs);
  heal: none, kubelet restarts the container.
- provider-hang / -slow / -garbage: the provider's `/fault?mode=` (faults_provider); heal: the mode of a
  provider fault still active, else `none`.
- apiserver-, etcd-, kubelet-, containerd-restart: SIGKILL (`hack/node-component.sh kill`); heal:
  `node-component.sh start`, node-up's own command and flags, returns once the component serves.
- ccd-edit-rollout: ClusterCSIDriver `spec.logLevel` changed, the DaemonSet rolls (faults_cluster);
  heal: the level it had, it rolls again.
- disk-full: the kubelet root's filesystem filled by one file (faults_resources); heal: the file removed.
- driver-memory-pressure: the driver container's memory cgroup limited to its usage + headroom;
  heal: the saved limit written back.

Processes and containers are found on the host (faults_host), never through the apiserver or containerd,
so a fault can be injected while another one has either of them down.

For the runner (measured on this 2-core VM, node otherwise idle; tests/node/test_node_chaos_faults.py):
- Build ChaosNode with `node.nodekit.Kube` (not the bare `nodekit` module tests/node imports: its
  KubectlError is another class, which faults_cluster would not catch).
- inject takes < 1 s. Heal of a restart returns once the component serves: etcd ~1.7 s, kube-apiserver
  ~3 s, kubelet ~1.5 s, containerd ~2 s (a second heal ~0.05 s); a new pod then reads its secret
  within ~10 s. A DaemonSet rollout (ccd-edit-rollout,
  at inject and again at heal) takes the driver away for ~5-10 s each time.
- A killed container restarts through kubelet's crash-loop back-off: ~immediately the first time, then
  10, 20, 40 ... 300 s for the same container killed again within 10 minutes (kills of one kind in a
  long run lengthen each outage beyond max_seconds).
- A restarted component's previous log is renamed logs/<component>.log.<UTC time> and a new
  logs/<component>.log begins (smaller than what was read of the old one).
- Under provider-hang a Mount is held until the mode changes or the driver's deadline (its
  --provider-timeout, 60 s, or kubelet's) passes; the provider has 32 gRPC workers.
- An inject or heal that cannot act raises FaultError naming why (e.g. no container to kill while
  kubelet's back-off or a rollout keeps it away for more than 10 s, the apiserver down for longer than
  a ClusterCSIDriver edit retries). Provider modes and the driver's memory limit do not fail so: while
  active they are held on whatever provider or driver container runs (a keeper thread, ~1 s).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from node.nodekit import CLUSTER_DIR, DRIVER_NAME, HACK, Kube

from .faults_host import Container, netns_get, running_containers

KINDS = (
    "driver-kill",
    "provider-kill",
    "provider-hang",
    "provider-slow",
    "provider-garbage",
    "apiserver-restart",
    "etcd-restart",
    "kubelet-restart",
    "containerd-restart",
    "operator-kill",
    "ccd-edit-rollout",
    "disk-full",
    "driver-memory-pressure",
)

PROVIDER_CONTROL_PORT = 8080
# How long a fault waits for a container that another fault (a kill, a rollout) is replacing.
CONTAINER_WAIT_SECONDS = 30.0


class Fault(Protocol):
    kind: str
    max_seconds: float

    def probe(self) -> str | None:
        """None when this machine can produce the fault; else the reason it is skipped."""
        ...

    def inject(self) -> None:
        """Start the fault; returns within a few seconds (blocking, thread-safe)."""
        ...

    def heal(self) -> None:
        """End the fault (idempotent; a no-op for one-shot kills)."""
        ...


class FaultError(RuntimeError):
    """A fault could not be injected or healed; the message says what was tried."""


@dataclass(frozen=True, slots=True)
class Workload:
    """Where one of the node's pieces runs: namespace, pod name prefix, container name."""

    namespace: str
    pod_prefix: str
    container: str


@dataclass
class ChaosNode:
    """What the faults need: the node's cluster, its directory, and where the pieces run."""

    kube: Kube
    cluster_dir: Path = CLUSTER_DIR
    provider_namespace: str = "kube-system"
    provider_app: str = "csi-secrets-store-e2e-provider"
    driver_namespace: str = "secrets-store-csi-driver"
    driver_app: str = "secrets-store-csi-driver-node"
    operator_deployment: str = "secrets-store-csi-operator"
    cluster_csi_driver: str = DRIVER_NAME
    kubelet_root: Path = Path("/var/lib/kubelet")

    @property
    def driver(self) -> Workload:
        return Workload(self.driver_namespace, f"{self.driver_app}-", "csi-driver")

    @property
    def provider(self) -> Workload:
        return Workload(self.provider_namespace, f"{self.provider_app}-", "provider")

    @property
    def operator(self) -> Workload:
        return Workload(self.driver_namespace, f"{self.operator_deployment}-", "operator")

    def containers(self, workload: Workload) -> list[Container]:
        return running_containers(workload.namespace, workload.pod_prefix, workload.container)

    def wait_container(self, workload: Workload, timeout: float = CONTAINER_WAIT_SECONDS) -> Container:
        """A running container of `workload`, waiting while kubelet (re)starts one."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.containers(workload)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise FaultError(f"no running {workload.container} container in {workload.namespace}")
            time.sleep(0.5)

    def provider_control(self, path: str) -> str:
        """GET the reference provider's HTTP control endpoint (e.g. ``/fault?mode=none``); its body.

        Asked inside the provider pod's network namespace (nsenter), so it works while the apiserver is
        down; a provider being restarted is waited for."""
        provider = self.wait_container(self.provider)
        return netns_get(provider.pid, f"http://127.0.0.1:{PROVIDER_CONTROL_PORT}{path}")

    def node_component(self, action: str, component: str, timeout: float) -> None:
        """hack/node-component.sh ACTION COMPONENT (kill, start, status) on this node's cluster."""
        env = {**os.environ, "SSCSI_NODE_CLUSTER_DIR": str(self.cluster_dir)}
        cmd = [str(HACK / "node-component.sh"), action, component]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if r.returncode != 0:
            raise FaultError(f"{' '.join(cmd[1:])} failed ({r.returncode}): {r.stderr.strip()[-800:]}")


def node_faults(ctx: ChaosNode) -> list[Fault]:
    """One fault of every kind in KINDS, in that order."""
    from .faults_cluster import ClusterCsiDriverEdit
    from .faults_procs import ComponentRestart, ContainerKill
    from .faults_provider import ProviderMode, ProviderModes
    from .faults_resources import DiskFull, DriverMemoryPressure

    modes = ProviderModes(ctx)
    faults: list[Fault] = [
        ContainerKill("driver-kill", ctx, ctx.driver),
        ContainerKill("provider-kill", ctx, ctx.provider),
        ProviderMode("provider-hang", modes, "hang", max_seconds=30.0),
        ProviderMode("provider-slow", modes, "slow&seconds=4", max_seconds=45.0),
        ProviderMode("provider-garbage", modes, "garbage", max_seconds=30.0),
        ComponentRestart("apiserver-restart", ctx, "kube-apiserver", max_seconds=20.0),
        ComponentRestart("etcd-restart", ctx, "etcd", max_seconds=15.0),
        ComponentRestart("kubelet-restart", ctx, "kubelet", max_seconds=20.0),
        ComponentRestart("containerd-restart", ctx, "containerd", max_seconds=15.0),
        ContainerKill("operator-kill", ctx, ctx.operator),
        ClusterCsiDriverEdit(ctx, max_seconds=60.0),
        DiskFull(ctx, max_seconds=30.0),
        DriverMemoryPressure(ctx, max_seconds=30.0),
    ]
    assert tuple(f.kind for f in faults) == KINDS
    return faults
