"""One driver process on its own node name, with its namespaces, reference provider and kubelet directory.

What a bench phase (`phase.DriverPhase`) and a soak run (`soak.SoakRun`) both need: the node and
namespaces created under the run's label, the provider started and asked (`/state`, `/rotation`), the
driver started as a DaemonSet would, its apiserver requests told apart from everyone else's, and
everything removed again (processes, mounts, directories, namespaces, the node).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from harness.processes import Process, free_port, start_provider

from . import drivers, fixtures
from .audit import Matcher, user_agent_matcher
from .settings import Shared
from .volume_files import unmount_all


@dataclass
class NodeRun:
    shared: Shared
    spec: drivers.DriverSpec
    phase: str  # what this run is ("base", "scale", "node", "soak"): in names, logs and progress
    _: KW_ONLY
    node: str = ""
    namespaces: list[str] = field(default_factory=list)
    workdir: Path = Path()
    provider: Process | None = None
    provider_http: str = ""
    driver: drivers.RunningDriver | None = None
    metrics_url: str = ""

    @property
    def kubelet_root(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def provider_dir(self) -> Path:
        return self.workdir / "providers"

    def say(self, message: str) -> None:
        self.shared.progress(f"[{self.spec.name}/{self.phase}] {message}")

    def matcher(self) -> Matcher:
        """This driver's apiserver requests in the audit log."""
        if self.spec.name == drivers.OURS:
            # tests may run other copies of our driver on the shared cluster at the same time
            scope = (self.node, *(f"/namespaces/{ns}/" for ns in self.namespaces))
            return user_agent_matcher(self.spec.user_agent_prefix, scope=scope)
        return user_agent_matcher(self.spec.user_agent_prefix)

    async def create_node(self, node: str, namespaces: list[str], workdir: Path) -> None:
        """The Node object, the namespaces (labelled with the run) and the local directories."""
        self.node, self.namespaces, self.workdir = node, namespaces, workdir
        (self.kubelet_root / "pods").mkdir(parents=True, exist_ok=True)
        self.provider_dir.mkdir(parents=True, exist_ok=True)
        api, label = self.shared.api, self.shared.run_label
        await fixtures.create_node(api, node, label)
        await fixtures.bounded(fixtures.create_namespace(api, ns, label) for ns in namespaces)

    async def start_provider(self, log_dir: Path) -> None:
        """A fresh reference provider serving this node's provider directory."""
        http_port = free_port()
        self.provider = await asyncio.to_thread(
            start_provider, self.provider_dir, log_dir, http_port=http_port
        )
        self.provider_http = f"http://127.0.0.1:{http_port}"

    def provider_calls(self) -> int:
        with urllib.request.urlopen(self.provider_http + "/state", timeout=10) as resp:
            return int(json.loads(resp.read())["mount_calls"])

    def provider_control(self, path: str) -> None:
        with urllib.request.urlopen(self.provider_http + path, timeout=10) as resp:
            resp.read()

    async def launch_driver(
        self, spec: drivers.DriverSpec, rotation_interval_s: float, log_path: Path
    ) -> drivers.RunningDriver:
        """`spec`'s binary (this run's driver, or a launcher wrapping it) on this node, socket ready."""
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.driver = await asyncio.to_thread(
            drivers.start,
            spec,
            node=self.node,
            socket=self.workdir / "csi.sock",
            kubeconfig=self.shared.kubeconfig,
            provider_dir=self.provider_dir,
            kubelet_root=self.kubelet_root,
            metrics_port=metrics_port,
            rotation_interval=f"{rotation_interval_s:g}s",
            log_path=log_path,
        )
        return self.driver

    async def remove(self, wait_namespaces: bool) -> float:
        """Stop the processes, take the mounts down, delete the directories, namespaces and node;
        returns the seconds spent waiting for the namespaces to go (when asked to wait)."""
        if self.driver is not None and self.driver.alive():
            await asyncio.to_thread(self.driver.stop)
        if self.provider is not None:
            await asyncio.to_thread(self.provider.stop)
        if self.workdir != Path():  # set by create_node
            unmount_all(self.kubelet_root)
            shutil.rmtree(self.workdir, ignore_errors=True)
        api = self.shared.api
        waited = await fixtures.delete_namespaces(
            api, self.namespaces, wait=120.0 if wait_namespaces else 0.0
        )
        if self.node:
            await fixtures.delete_nodes(api, [self.node])
        return waited
