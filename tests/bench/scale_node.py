"""A node at its limits: 250 pods with 2 volumes each (500 volumes) on one driver.

The bench's `DriverPhase` with another pod shape: each pod has two CSI volumes, each volume its own
SecretProviderClass. A freshly started driver gets all 500 NodePublishVolume calls at once (kubelet
at node start), then the steady state and the three republish passes of scenarios 2 and 3.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from harness.env import csi_volume, pod_manifest
from harness.k8s import create_pod
from harness.loadgen import LoadGenerator, PreparedVolume, prepare
from harness.processes import free_port, start_provider
from sscsi_kube import KubeClient

from . import drivers, fixtures, procstat
from .scenarios import DriverPhase, Settings, Shared, batch_stats

VOLUMES_PER_POD = 2


def node_settings(base: Settings, pods: int) -> Settings:
    """The bench's settings with one publish size (the pod count) and no large payloads."""
    return dataclasses.replace(base, publish_sizes=(pods,), large=False, scale_factor=0)


async def create_multi_volume_pod(
    api: KubeClient, namespace: str, name: str, node: str, spcs: list[str]
) -> dict[str, Any]:
    manifest = pod_manifest(
        name,
        namespace,
        node,
        [csi_volume(f"secrets-{i}", spc) for i, spc in enumerate(spcs)],
        tolerations=[{"operator": "Exists"}],  # the node has no kubelet: no taint eviction
    )
    manifest["metadata"]["labels"] = {fixtures.MANAGED_BY: fixtures.BENCH}
    return await create_pod(api, manifest)


@dataclasses.dataclass
class NodeLimitPhase(DriverPhase):
    """One driver, `sizes[0]` pods of VOLUMES_PER_POD volumes each."""

    volumes_per_pod: int = VOLUMES_PER_POD

    async def setup(self, pods_by_size: dict[int, int]) -> dict[str, list[dict[str, Any]]]:
        run, short = self.shared.run_id, self.spec.name[0] + "l"
        self.node = f"bench-{run}-{self.spec.name}-{self.phase}"
        self.namespaces = [f"b-{run}-{short}-{k}" for k in range(self.s.namespaces_per_driver)]
        self.workdir = self.shared.workroot / f"{self.spec.name}-{self.phase}"
        (self.kubelet_root / "pods").mkdir(parents=True, exist_ok=True)
        self.provider_dir.mkdir(parents=True, exist_ok=True)
        api = self.shared.api
        await fixtures.create_node(api, self.node, run)
        await fixtures.bounded(fixtures.create_namespace(api, ns, run) for ns in self.namespaces)
        obj = fixtures.objects(self.s.objects_per_volume, self.s.object_size)
        count = max(pods_by_size.values())
        names = [(self.namespaces[i % len(self.namespaces)], f"p-{i:04d}") for i in range(count)]
        spcs = [
            (ns, f"{name}-v{v}") for ns, name in names for v in range(self.volumes_per_pod)
        ]  # one SPC per volume
        await fixtures.bounded((fixtures.create_spc(api, ns, spc, obj) for ns, spc in spcs), 32)
        pods = await fixtures.bounded(
            (
                create_multi_volume_pod(
                    api, ns, name, self.node, [f"{name}-v{v}" for v in range(self.volumes_per_pod)]
                )
                for ns, name in names
            ),
            32,
        )
        http_port = free_port()
        self.provider = await asyncio.to_thread(
            start_provider, self.provider_dir, self.shared.logs_dir, http_port=http_port
        )
        self.provider_http = f"http://127.0.0.1:{http_port}"
        return {"pods": pods}

    async def run(self) -> dict[str, Any]:
        pods_count = self.sizes[0]
        t0 = time.monotonic()
        pods = await self.setup({pods_count: pods_count})
        self.result = {
            "node": self.node,
            "namespaces": len(self.namespaces),
            "pods": pods_count,
            "volumes_per_pod": self.volumes_per_pod,
            "setup_s": round(time.monotonic() - t0, 2),
        }
        gen: LoadGenerator | None = None
        try:
            gen = await self.start_driver()
            self.result["baseline"] = self.memory()
            vols: list[PreparedVolume] = [v for p in pods["pods"] for v in prepare(p, self.kubelet_root)]
            self.say(f"publish {len(vols)} volumes ({pods_count} pods) at once")
            mark = self.audit_mark()
            calls = self.provider_calls()
            assert self.driver is not None
            burst_started = time.monotonic()
            with procstat.Window(self.driver.pid) as window:
                batch = await gen.publish(vols)
            burst_ended = time.monotonic()
            entry = batch_stats(batch)
            entry["volumes"] = len(vols)
            entry["driver"] = window.summary()
            entry["provider_calls"] = self.provider_calls() - calls
            entry["apiserver"] = await self.audit_count(mark)
            entry["memory_after"] = self.memory()
            entry["volumes_with_files"] = sum(1 for v in vols if _has_files(v))
            if batch.errors:
                self.say(f"publish errors: {batch.errors[:3]}")
            self.say(
                f"published {entry['ok']}/{len(vols)}: p50 {entry['p50_ms']} ms, p99 {entry['p99_ms']} ms, "
                f"CPU {entry['driver']['cpu_seconds']} s"
            )
            self.result["publish"] = entry
            await self.steady_and_rotation(gen, vols, burst_ended, burst_started)
            unpub = await gen.unpublish(vols)
            self.result["unpublish"] = {k: v for k, v in batch_stats(unpub).items() if k != "latencies_ms"}
            self.result["final_memory"] = self.memory()
            self.result["driver_alive"] = self.driver is not None and self.driver.alive()
        finally:
            await self.stop_driver(gen)
        return self.result


def _has_files(vol: PreparedVolume) -> bool:
    try:
        return any(not p.name.startswith("..") for p in vol.target.iterdir())
    except OSError:
        return False


async def run_node_limit(
    shared: Shared, spec: drivers.DriverSpec, settings: Settings, pods: int
) -> dict[str, Any]:
    phase_shared = dataclasses.replace(shared, settings=node_settings(settings, pods))
    phase = NodeLimitPhase(phase_shared, spec, "node", (pods,), False)
    started = time.monotonic()
    try:
        result = await phase.run()
    except Exception as err:  # keep the other driver's figures; say what broke
        shared.progress(f"[{spec.name}/node] FAILED: {err!r}")
        result = dict(phase.result, error=repr(err))
        if phase.driver is not None:
            result["driver_log_tail"] = phase.driver.log_tail(2000)
    finally:
        await phase.teardown(wait_namespaces=settings.mode == "full")
    result["phase_s"] = round(time.monotonic() - started, 2)
    return result
