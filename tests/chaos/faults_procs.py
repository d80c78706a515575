"""Process faults: a container's process SIGKILLed (kubelet restarts it), a node component killed and
started again with the node scripts' own command (hack/node-component.sh).

A killed container comes back through kubelet's restart policy, with kubelet's crash-loop back-off: the
first restart of a container follows within about 10 s, then 20, 40, ... up to 300 s for the same
container killed again before it ran 10 minutes. `max_seconds` covers the first restart only.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from .faults import ChaosNode, FaultError, Workload

# A kill waits for its container to run: other faults (a DaemonSet rollout the controller-manager is slow
# to carry out after apiserver restarts, kubelet or containerd down) can leave none for over a minute
# (seed 20: none for 10 s, the kill was lost and the run missed a fault kind).
INJECT_WAIT_SECONDS = 120.0
KILL_TIMEOUT = 30.0
START_TIMEOUT = 200.0  # node-component.sh gives a start 150 s (SSCSI_COMPONENT_START_TIMEOUT)


@dataclass
class ContainerKill:
    """SIGKILL of the first process of a workload's container (found on the host); heal is a no-op."""

    kind: str
    ctx: ChaosNode
    workload: Workload
    max_seconds: float = 30.0
    killed: list[str] = field(default_factory=list)  # container ids, oldest first

    def probe(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root to signal the node's containers"
        if not self.ctx.containers(self.workload):
            w = self.workload
            return f"no running {w.container} container of {w.pod_prefix}* in {w.namespace} on this node"
        return None

    def inject(self) -> None:
        target = self.ctx.wait_container(self.workload, INJECT_WAIT_SECONDS)
        try:
            os.kill(target.pid, signal.SIGKILL)
        except ProcessLookupError:
            raise FaultError(f"{target.name} of {target.pod} exited before the kill") from None
        self.killed.append(target.id)

    def heal(self) -> None:
        return None  # kubelet restarts the container


@dataclass
class ComponentRestart:
    """A node component (etcd, kube-apiserver, kubelet, containerd) SIGKILLed at inject, started at heal."""

    kind: str
    ctx: ChaosNode
    component: str
    max_seconds: float = 20.0

    def probe(self) -> str | None:
        if os.geteuid() != 0:
            return f"needs root to restart {self.component}"
        try:
            self.ctx.node_component("status", self.component, timeout=30)
        except (FaultError, OSError) as err:
            return f"{self.component} of the node does not run or serve here: {err}"
        return None

    def inject(self) -> None:
        self.ctx.node_component("kill", self.component, timeout=KILL_TIMEOUT)

    def heal(self) -> None:
        """Started with node-up's command when it is not running; returns once it serves."""
        self.ctx.node_component("start", self.component, timeout=START_TIMEOUT)
