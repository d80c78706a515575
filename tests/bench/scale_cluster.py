"""A cluster of M simulated nodes on one apiserver: one driver process per node name, each with its own
kubelet directory, load generator, provider socket (its own reference provider) and pods.

For one driver and one M: start the M drivers, publish every node's pods (node after node, each node's
volumes at once), stay idle, then a rotation wave (every provider rotates, every node's kubelet
republishes at the same time). Measured: the drivers' apiserver requests (audit log) per minute idle and
during the wave, the watches they hold open, the apiserver's CPU and RSS, publish latency.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.loadgen import Batch, LoadGenerator, PreparedVolume, prepare
from harness.processes import Process, free_port, start_provider

from . import drivers, fixtures, procstat
from .audit import AuditLog, Mark, Matcher, user_agent_matcher
from .latency import percentile
from .scale_apiserver import ApiserverProcess, CpuMeter, open_watches, served_watches, watch_summary
from .settings import Shared
from .volume_files import first_file, unmount_all


@dataclass(frozen=True)
class ClusterSettings:
    pods_per_node: int = 8
    namespaces: int = 10  # shared by all nodes, as in a real cluster
    objects_per_volume: int = 5
    object_size: int = 1024
    rotation_interval_s: float = 10.0
    settle_s: float = 5.0
    idle_window_s: float = 60.0
    wave_window_s: float = 30.0
    start_concurrency: int = 4


@dataclass
class ProviderPool:
    """One reference provider per simulated node, started once and reused by every run."""

    root: Path
    logs_dir: Path
    providers: list[tuple[Process, Path, str]] = field(default_factory=list)

    async def ensure(self, count: int) -> None:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> tuple[Process, Path, str]:
            async with sem:
                pdir = self.root / f"providers-{i:03d}"
                pdir.mkdir(parents=True, exist_ok=True)
                port = free_port()
                logs = self.logs_dir / "providers" / f"{i:03d}"
                proc = await asyncio.to_thread(start_provider, pdir, logs, http_port=port)
                return proc, pdir, f"http://127.0.0.1:{port}"

        self.providers += await asyncio.gather(*(one(i) for i in range(len(self.providers), count)))

    async def rotate(self, count: int, rotated: bool) -> None:
        value = "true" if rotated else "false"
        await asyncio.gather(
            *(
                asyncio.to_thread(_get, f"{http}/rotation?rotated={value}")
                for _, _, http in self.providers[:count]
            )
        )

    def stop(self) -> None:
        for proc, _, _ in self.providers:
            proc.stop()
        self.providers.clear()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body


@dataclass
class SimNode:
    name: str
    workdir: Path
    provider_dir: Path
    driver: drivers.RunningDriver | None = None
    gen: LoadGenerator | None = None
    volumes: list[PreparedVolume] = field(default_factory=list)

    @property
    def kubelet_root(self) -> Path:
        return self.workdir / "kubelet"


def _latency_stats(batches: list[Batch]) -> dict[str, Any]:
    lat = [s * 1000 for b in batches for s in b.latencies]
    errors = [e for b in batches for e in b.errors]
    return {
        "n": sum(len(b.results) for b in batches),
        "ok": len(lat),
        "errors": errors[:5],
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
    }


@dataclass
class ClusterRun:
    shared: Shared
    spec: drivers.DriverSpec
    m: int
    cs: ClusterSettings
    pool: ProviderPool
    nodes: list[SimNode] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def audit(self) -> AuditLog:
        return self.shared.audit

    def say(self, message: str) -> None:
        self.shared.progress(f"[{self.spec.name}/M={self.m}] {message}")

    def matcher(self) -> Matcher:
        if self.spec.name == drivers.OURS:  # other copies of our driver may run tests meanwhile
            scope = (*(n.name for n in self.nodes), *(f"/namespaces/{ns}/" for ns in self.namespaces))
            return user_agent_matcher(self.spec.user_agent_prefix, scope=scope)
        return user_agent_matcher(self.spec.user_agent_prefix)

    def mark(self) -> Mark | None:
        return self.audit.mark(time.time()) if self.audit.available() else None

    async def requests(self, mark: Mark | None, settle: float = 1.0) -> dict[str, Any] | None:
        if mark is None:
            return None
        await asyncio.sleep(settle)
        end = time.time()
        await asyncio.sleep(0.5)  # a request received before `end` may still be completing
        return self.audit.count(mark, end, self.matcher()).as_dict()

    def drivers_cpu(self) -> float:
        return sum(procstat.cpu_seconds(n.driver.pid) for n in self.nodes if n.driver and n.driver.alive())

    def drivers_rss(self) -> list[float]:
        return [n.driver.memory_mib()[0] for n in self.nodes if n.driver and n.driver.alive()]

    async def setup(self) -> None:
        run, tag = self.shared.run_id, f"{self.spec.name[0]}{self.m}"
        api = self.shared.api
        self.namespaces = [f"c-{run}-{tag}-{k:02d}" for k in range(self.cs.namespaces)]
        await self.pool.ensure(self.m)
        for i in range(self.m):
            name = f"bench-{run}-{self.spec.name}-m{self.m}-n{i:03d}"
            node = SimNode(name, self.shared.workroot / f"{self.spec.name}-m{self.m}" / f"n{i:03d}", Path())
            node.provider_dir = self.pool.providers[i][1]
            (node.kubelet_root / "pods").mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
        label = self.shared.run_label
        await fixtures.bounded(fixtures.create_node(api, n.name, label) for n in self.nodes)
        await fixtures.bounded(fixtures.create_namespace(api, ns, label) for ns in self.namespaces)
        obj = fixtures.objects(self.cs.objects_per_volume, self.cs.object_size)
        placed = [
            (
                node,
                self.namespaces[(i * self.cs.pods_per_node + j) % len(self.namespaces)],
                f"n{i:03d}-p{j:02d}",
            )
            for i, node in enumerate(self.nodes)
            for j in range(self.cs.pods_per_node)
        ]
        await fixtures.bounded((fixtures.create_spc(api, ns, name, obj) for _, ns, name in placed), 32)
        pods = await fixtures.bounded(
            (fixtures.create_bench_pod(api, ns, name, node.name, name) for node, ns, name in placed), 32
        )
        for (node, _, _), pod in zip(placed, pods, strict=True):
            node.volumes += prepare(pod, node.kubelet_root)

    async def start_drivers(self) -> None:
        sem = asyncio.Semaphore(self.cs.start_concurrency)
        logs = self.shared.logs_dir / f"cluster-{self.spec.name}-m{self.m}"

        async def one(node: SimNode) -> None:
            async with sem:
                node.driver = await asyncio.to_thread(
                    drivers.start,
                    self.spec,
                    node=node.name,
                    socket=node.workdir / "csi.sock",
                    kubeconfig=self.shared.kubeconfig,
                    provider_dir=node.provider_dir,
                    kubelet_root=node.kubelet_root,
                    metrics_port=free_port(),
                    rotation_interval=f"{self.cs.rotation_interval_s:g}s",
                    log_path=logs / f"{node.name}.log",
                )
                node.gen = LoadGenerator(node.workdir / "csi.sock")
                await node.gen.wait_ready()

        await asyncio.gather(*(one(n) for n in self.nodes))

    async def run(self) -> dict[str, Any]:
        api, clock = self.shared.api, time.monotonic
        apiserver = ApiserverProcess.find(Path(self.audit.path).parents[1])
        t0 = clock()
        await self.setup()
        res = self.result
        res.update(nodes=self.m, pods_per_node=self.cs.pods_per_node, namespaces=len(self.namespaces))
        res["setup_s"] = round(clock() - t0, 2)
        watches_before = watch_summary(await served_watches(api))
        res["apiserver_rss_before_mib"] = apiserver.rss_mib() if apiserver else None
        run_mark = self.mark()
        t0 = clock()
        await self.start_drivers()
        res["start_s"] = round(clock() - t0, 2)
        self.say(f"{self.m} drivers started in {res['start_s']}s")
        await asyncio.sleep(self.cs.settle_s)  # initial lists and watches

        # publish: node after node, each node's volumes at once (kubelet at pod start)
        mark, cpu0, t0 = self.mark(), self.drivers_cpu(), clock()
        batches = []
        for node in self.nodes:
            assert node.gen is not None
            batches.append(await node.gen.publish(node.volumes))
        published_at = clock()
        pub = _latency_stats(batches)
        pub["seconds"] = round(published_at - t0, 2)
        pub["drivers_cpu_s"] = round(self.drivers_cpu() - cpu0, 3)
        pub["apiserver"] = await self.requests(mark)
        res["publish"] = pub
        self.say(f"published {pub['ok']}/{pub['n']}: p50 {pub['p50_ms']} ms, p99 {pub['p99_ms']} ms")

        # idle: nothing happens on any node
        await asyncio.sleep(self.cs.settle_s)
        mark, cpu0, meter = self.mark(), self.drivers_cpu(), CpuMeter(apiserver, clock).start()
        await asyncio.sleep(self.cs.idle_window_s)
        idle_cpu, drivers_cpu = meter.stop(), self.drivers_cpu() - cpu0
        reqs = await self.requests(mark, settle=0.0)
        rss = self.drivers_rss()
        watches = open_watches(self.audit, run_mark, self.matcher()) if run_mark else None
        watches_after = watch_summary(await served_watches(api))
        per_min = None if reqs is None else reqs["requests"] * 60.0 / self.cs.idle_window_s
        res["idle"] = {
            "window_s": self.cs.idle_window_s,
            "apiserver": reqs,
            "requests_per_min": None if per_min is None else round(per_min, 2),
            "requests_per_min_per_node": None if per_min is None else round(per_min / self.m, 3),
            "apiserver_cpu": idle_cpu,
            "apiserver_rss_mib": apiserver.rss_mib() if apiserver else None,
            "drivers_cpu_millicores_per_node": round(1000 * drivers_cpu / self.cs.idle_window_s / self.m, 2),
            "driver_rss_mean_mib": round(sum(rss) / len(rss), 2) if rss else None,
            "driver_rss_max_mib": round(max(rss), 2) if rss else None,
            "drivers_alive": len(rss),
            "watches": watches,
            "watches_per_node": None if watches is None else round(watches["open"] / self.m, 2),
            "served_watches_before": watches_before,
            "served_watches": watches_after,
        }
        self.say(
            f"idle {self.cs.idle_window_s:g}s: {res['idle']['requests_per_min_per_node']} req/min/node, "
            f"{res['idle']['watches_per_node']} watches/node, apiserver "
            f"{(idle_cpu or {}).get('cpu_millicores')} mCPU"
        )
        await self.rotation_wave(apiserver, published_at)
        return res

    async def rotation_wave(self, apiserver: ApiserverProcess | None, published_at: float) -> None:
        """Every provider rotates; every node's kubelet republishes all its volumes at once."""
        clock = time.monotonic
        delay = published_at + self.cs.rotation_interval_s + 1.0 - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.pool.rotate(self.m, True)
        mark, cpu0, meter = self.mark(), self.drivers_cpu(), CpuMeter(apiserver, clock).start()
        t0 = clock()
        batches = await asyncio.gather(*(n.gen.republish(n.volumes) for n in self.nodes if n.gen))
        wave_s = clock() - t0
        await asyncio.sleep(max(0.0, t0 + self.cs.wave_window_s - clock()))
        wave_cpu, drivers_cpu = meter.stop(), self.drivers_cpu() - cpu0
        reqs = await self.requests(mark, settle=0.0)
        window = max(self.cs.wave_window_s, wave_s)
        rotated = sum(1 for n in self.nodes for v in n.volumes if first_file(v.target) == b"rotated")
        await self.pool.rotate(self.m, False)
        per_min = None if reqs is None else reqs["requests"] * 60.0 / window
        self.result["wave"] = {
            **_latency_stats(list(batches)),
            "seconds": round(wave_s, 2),
            "window_s": round(window, 2),
            "volumes_rotated": rotated,
            "apiserver": reqs,
            "requests_per_node": None if reqs is None else round(reqs["requests"] / self.m, 2),
            "requests_per_min": None if per_min is None else round(per_min, 2),
            "requests_per_min_per_node": None if per_min is None else round(per_min / self.m, 3),
            "apiserver_cpu": wave_cpu,
            "apiserver_rss_mib": apiserver.rss_mib() if apiserver else None,
            "drivers_cpu_s": round(drivers_cpu, 3),
        }
        self.say(
            f"rotation wave: {rotated} volumes rotated in {wave_s:.1f}s, "
            f"{self.result['wave']['requests_per_node']} requests/node"
        )

    async def teardown(self, wait_namespaces: bool) -> None:
        async def stop(node: SimNode) -> None:
            if node.gen is not None:
                await node.gen.close()
            if node.driver is not None:
                await asyncio.to_thread(node.driver.stop)

        await asyncio.gather(*(stop(n) for n in self.nodes))
        for node in self.nodes:
            unmount_all(node.kubelet_root)
        if self.nodes:
            shutil.rmtree(self.nodes[0].workdir.parent, ignore_errors=True)
        api = self.shared.api
        waited = await fixtures.delete_namespaces(
            api, self.namespaces, wait=120.0 if wait_namespaces else 0.0
        )
        await fixtures.delete_nodes(api, [n.name for n in self.nodes])
        self.result["cleanup_wait_s"] = round(waited, 2)


async def run_cluster(
    shared: Shared, spec: drivers.DriverSpec, m: int, cs: ClusterSettings, pool: ProviderPool, wait: bool
) -> dict[str, Any]:
    run = ClusterRun(shared, spec, m, cs, pool)
    started = time.monotonic()
    try:
        result = await run.run()
    except Exception as err:  # keep the other runs' figures; say what broke
        shared.progress(f"[{spec.name}/M={m}] FAILED: {err!r}")
        result = dict(run.result, error=repr(err))
        dead = [n for n in run.nodes if n.driver is not None and not n.driver.alive()]
        if dead and dead[0].driver is not None:
            result["driver_log_tail"] = dead[0].driver.log_tail(2000)
    finally:
        await run.teardown(wait_namespaces=wait)
    result["phase_s"] = round(time.monotonic() - started, 2)
    return result
