"""The scenarios of issue 7, run against one driver at a time.

One `DriverPhase` = one driver binary on its own node name, namespaces, provider process and
kubelet directory, against the shared apiserver:

1. publish latency: for each N, a fresh driver process ("node start") gets N pods' volumes at once;
2. steady state: RSS/CPU with the largest N mounted, idle, and during each republish pass;
3. rotation: republish passes over all volumes: throttled (inside the rotation interval),
   unchanged (interval elapsed, provider returns the same), changed (provider rotated everything);
   each with its duration, CPU, provider calls and the driver's apiserver requests (audit log);
5. large payloads: a 3 MiB secret and a 100-file volume, published one at a time.
Scenario 4 is the same phase run again after `run.py` filled the cluster with other nodes' work.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.loadgen import Batch, LoadGenerator, PreparedVolume, prepare
from harness.processes import Process, free_port, start_provider
from sscsi_kube import KubeClient

from . import drivers, fixtures, procstat
from .audit import AuditLog, Mark, user_agent_matcher

MIB = procstat.MIB
PASS_MARGIN_S = 1.0  # a pass due after the interval starts this much later than strictly needed


@dataclass(frozen=True)
class Settings:
    mode: str
    publish_sizes: tuple[int, ...] = (1, 10, 110)
    objects_per_volume: int = 10
    object_size: int = 1024
    namespaces_per_driver: int = 10
    rotation_interval_s: float = 10.0
    idle_window_s: float = 10.0
    settle_s: float = 2.0
    large: bool = True
    large_repeats: int = 3
    large_secret_bytes: int = 3 * 1024 * 1024
    many_files: int = 100
    scale_factor: int = 10
    scale_nodes: int = 10
    scale_namespaces: int = 20

    @property
    def steady_pods(self) -> int:
        return max(self.publish_sizes)

    @classmethod
    def full(cls) -> Settings:
        return cls(mode="full")

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            mode="smoke",
            publish_sizes=(2,),
            namespaces_per_driver=1,
            rotation_interval_s=4.0,  # the throttled pass runs ~2 s after the burst: room under load
            idle_window_s=1.0,
            settle_s=1.0,
            large=False,
            scale_factor=0,
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); exact on small samples, no interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def batch_stats(batch: Batch) -> dict[str, Any]:
    lat = [s * 1000 for s in batch.latencies]
    return {
        "n": len(batch.results),
        "ok": len(lat),
        "errors": batch.errors[:5],
        "p50_ms": round(percentile(lat, 50), 2),
        "p90_ms": round(percentile(lat, 90), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
        "wall_s": round(batch.wall_seconds, 3),
        "pods_per_s": round(len(lat) / batch.wall_seconds, 2) if batch.wall_seconds > 0 else None,
        "latencies_ms": [round(x, 2) for x in lat],
    }


@dataclass
class Shared:
    """What every phase uses: the apiserver, its audit log, paths and the run's identity."""

    api: KubeClient
    audit: AuditLog
    kubeconfig: Path
    run_id: str
    workroot: Path
    logs_dir: Path
    settings: Settings
    progress: Any = print
    py_spy_dir: Path | None = None  # record our driver with py-spy (slows it: profiling runs only)


@dataclass
class DriverPhase:
    shared: Shared
    spec: drivers.DriverSpec
    phase: str  # "base" or "scale"
    sizes: tuple[int, ...]
    large: bool
    node: str = ""
    namespaces: list[str] = field(default_factory=list)
    workdir: Path = Path()
    provider: Process | None = None
    provider_http: str = ""
    driver: drivers.RunningDriver | None = None
    driver_starts: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # ---- plumbing ----

    @property
    def s(self) -> Settings:
        return self.shared.settings

    @property
    def kubelet_root(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def provider_dir(self) -> Path:
        return self.workdir / "providers"

    def say(self, message: str) -> None:
        self.shared.progress(f"[{self.spec.name}/{self.phase}] {message}")

    def matcher(self) -> Any:
        if self.spec.name == drivers.OURS:
            # tests may run other copies of our driver on the shared cluster at the same time
            scope = (self.node, *(f"/namespaces/{ns}/" for ns in self.namespaces))
            return user_agent_matcher(self.spec.user_agent_prefix, scope=scope)
        return user_agent_matcher(self.spec.user_agent_prefix)

    def audit_mark(self) -> Mark | None:
        return self.shared.audit.mark(time.time()) if self.shared.audit.available() else None

    async def audit_count(self, mark: Mark | None, settle: float = 1.0) -> dict[str, Any] | None:
        """Requests the driver sent from `mark` until `settle` seconds from now."""
        if mark is None:
            return None
        await asyncio.sleep(settle)
        end = time.time()
        await asyncio.sleep(0.5)  # a request received before `end` may still be completing
        return self.shared.audit.count(mark, end, self.matcher()).as_dict()

    def provider_calls(self) -> int:
        with urllib.request.urlopen(self.provider_http + "/state", timeout=10) as resp:
            return int(json.loads(resp.read())["mount_calls"])

    def provider_control(self, path: str) -> None:
        with urllib.request.urlopen(self.provider_http + path, timeout=10) as resp:
            resp.read()

    def memory(self) -> dict[str, float]:
        assert self.driver is not None
        rss, hwm = self.driver.memory_mib()
        extra = procstat.status_fields(self.driver.pid, "RssAnon", "RssFile", "Threads")
        return {
            "rss_mib": round(rss, 2),
            "hwm_mib": round(hwm, 2),
            "rss_anon_mib": round(extra.get("RssAnon", 0) / MIB, 2),
            "rss_file_mib": round(extra.get("RssFile", 0) / MIB, 2),
            "threads": extra.get("Threads", 0),
        }

    async def start_driver(self) -> LoadGenerator:
        self.driver_starts += 1
        log = self.shared.logs_dir / f"{self.spec.name}-{self.phase}-driver.log"
        self.driver = await asyncio.to_thread(
            drivers.start,
            self.spec,
            node=self.node,
            socket=self.workdir / "csi.sock",
            kubeconfig=self.shared.kubeconfig,
            provider_dir=self.provider_dir,
            kubelet_root=self.kubelet_root,
            metrics_port=free_port(),
            rotation_interval=f"{self.s.rotation_interval_s:g}s",
            log_path=log,
        )
        if self.shared.py_spy_dir is not None and self.spec.name == drivers.OURS:
            self.start_profiler()
        gen = LoadGenerator(self.workdir / "csi.sock")
        await gen.wait_ready()
        await asyncio.sleep(self.s.settle_s)  # initial lists/watches, as a node would before pods land
        if not self.driver.alive():
            raise RuntimeError(f"{self.spec.name} driver died:\n{self.driver.log_tail()}")
        return gen

    def start_profiler(self) -> None:
        """py-spy (sampling, from outside the process) writes folded stacks when the driver exits."""
        assert self.driver is not None and self.shared.py_spy_dir is not None
        py_spy = Path(sys.executable).parent / "py-spy"
        out = self.shared.py_spy_dir / f"{self.spec.name}-{self.phase}-start{self.driver_starts}.folded"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(py_spy), "record", "--pid", str(self.driver.pid), "--rate", "250", "--threads"]
        argv += ["--format", "raw", "--output", str(out)]
        self.profilers.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.say(f"py-spy recording to {out}")

    async def stop_driver(self, gen: LoadGenerator | None) -> None:
        if gen is not None:
            await gen.close()
        if self.driver is not None:
            await asyncio.to_thread(self.driver.stop)
        for prof in self.profilers:  # py-spy writes its file when the process it samples exits
            await asyncio.to_thread(prof.wait, 60)
        self.profilers.clear()

    # ---- setup / teardown ----

    async def setup(self, pods_by_size: dict[int, int]) -> dict[str, list[dict[str, Any]]]:
        run, short = self.shared.run_id, self.spec.name[0] + self.phase[0]
        self.node = f"bench-{run}-{self.spec.name}-{self.phase}"
        self.namespaces = [f"b-{run}-{short}-{k}" for k in range(self.s.namespaces_per_driver)]
        self.workdir = self.shared.workroot / f"{self.spec.name}-{self.phase}"
        (self.kubelet_root / "pods").mkdir(parents=True, exist_ok=True)
        self.provider_dir.mkdir(parents=True, exist_ok=True)
        api = self.shared.api
        await fixtures.create_node(api, self.node, run)
        await fixtures.bounded(fixtures.create_namespace(api, ns, run) for ns in self.namespaces)
        obj = fixtures.objects(self.s.objects_per_volume, self.s.object_size)
        pods: dict[str, list[dict[str, Any]]] = {}
        for size, count in pods_by_size.items():
            pods[f"n{size}"] = await fixtures.pods_with_spcs(
                api,
                namespaces=self.namespaces,
                node=self.node,
                prefix=f"p{size}",
                count=count,
                objects_yaml=obj,
            )
        if self.large:
            ns = self.namespaces[0]
            big = fixtures.objects_param_sized(self.s.large_secret_bytes)
            many = fixtures.objects(self.s.many_files, self.s.object_size, prefix="file")
            pods["big"] = await fixtures.bounded(
                self._pod_with_spc(ns, f"big-{i}", big) for i in range(self.s.large_repeats)
            )
            pods["many"] = await fixtures.bounded(
                self._pod_with_spc(ns, f"many-{i}", many) for i in range(self.s.large_repeats)
            )
        http_port = free_port()
        self.provider = await asyncio.to_thread(
            start_provider, self.provider_dir, self.shared.logs_dir, http_port=http_port
        )
        # one provider log per phase: start_provider names it after the provider
        self.provider_http = f"http://127.0.0.1:{http_port}"
        return pods

    async def _pod_with_spc(self, ns: str, name: str, objects_yaml: str) -> dict[str, Any]:
        await fixtures.create_spc(self.shared.api, ns, name, objects_yaml)
        return await fixtures.create_bench_pod(self.shared.api, ns, name, self.node, name)

    async def teardown(self, wait_namespaces: bool) -> None:
        if self.driver is not None and self.driver.alive():
            await asyncio.to_thread(self.driver.stop)
        if self.provider is not None:
            await asyncio.to_thread(self.provider.stop)
        _unmount_all(self.kubelet_root)
        shutil.rmtree(self.workdir, ignore_errors=True)
        waited = await fixtures.delete_namespaces(
            self.shared.api, self.namespaces, wait=120.0 if wait_namespaces else 0.0
        )
        await fixtures.delete_nodes(self.shared.api, [self.node])
        self.result["cleanup_wait_s"] = round(waited, 2)

    # ---- scenarios ----

    async def run(self) -> dict[str, Any]:
        pods_by_size = {n: n for n in self.sizes}
        t0 = time.monotonic()
        pods = await self.setup(pods_by_size)
        self.result = {"node": self.node, "namespaces": len(self.namespaces), "setup_s": 0.0}
        self.result["setup_s"] = round(time.monotonic() - t0, 2)
        gen: LoadGenerator | None = None
        try:
            publish: dict[str, Any] = {}
            steady_vols: list[PreparedVolume] = []
            for size in self.sizes:
                gen = await self.start_driver()
                if "baseline" not in self.result:
                    self.result["baseline"] = self.memory()
                vols = [v for p in pods[f"n{size}"] for v in prepare(p, self.kubelet_root)]
                self.say(f"publish {len(vols)} volumes at once")
                mark = self.audit_mark()
                calls = self.provider_calls()
                assert self.driver is not None
                burst_started = time.monotonic()
                with procstat.Window(self.driver.pid) as window:
                    batch = await gen.publish(vols)
                burst_ended = time.monotonic()
                entry = batch_stats(batch)
                entry["driver"] = window.summary()
                entry["provider_calls"] = self.provider_calls() - calls
                entry["apiserver"] = await self.audit_count(mark)
                entry["memory_after"] = self.memory()
                publish[str(size)] = entry
                if batch.errors:
                    self.say(f"publish errors: {batch.errors[:3]}")
                if size != max(self.sizes):
                    unpub = await gen.unpublish(vols)
                    entry["unpublish"] = {k: v for k, v in batch_stats(unpub).items() if k != "latencies_ms"}
                    await self.stop_driver(gen)
                    gen = None
                else:
                    steady_vols = vols
            self.result["publish"] = publish
            assert gen is not None
            await self.steady_and_rotation(gen, steady_vols, burst_ended, burst_started)
            if self.large:
                await self.large_payloads(gen, pods)
            self.say(f"unpublish {len(steady_vols)} volumes at once")
            unpub = await gen.unpublish(steady_vols)
            self.result["unpublish"] = {k: v for k, v in batch_stats(unpub).items() if k != "latencies_ms"}
            self.result["final_memory"] = self.memory()
            self.result["driver_starts"] = self.driver_starts
            self.result["driver_alive"] = self.driver is not None and self.driver.alive()
        finally:
            await self.stop_driver(gen)
        return self.result

    async def republish_pass(
        self, gen: LoadGenerator, vols: list[PreparedVolume], kind: str
    ) -> tuple[dict[str, Any], float]:
        """One pass over `vols`: its figures, and when its last call returned (monotonic)."""
        assert self.driver is not None
        mark = self.audit_mark()
        calls = self.provider_calls()
        with procstat.Window(self.driver.pid) as window:
            batch = await gen.republish(vols)
        ended = time.monotonic()
        stats = batch_stats(batch)
        entry: dict[str, Any] = {
            "kind": kind,
            "volumes": len(vols),
            "duration_s": round(batch.wall_seconds, 3),
            "p50_ms": stats["p50_ms"],
            "p99_ms": stats["p99_ms"],
            "errors": stats["errors"],
            "provider_calls": self.provider_calls() - calls,
            "driver": window.summary(),
            "apiserver": await self.audit_count(mark),
        }
        req = (entry["apiserver"] or {}).get("requests")
        self.say(
            f"{kind} republish pass: {entry['duration_s']}s, provider calls {entry['provider_calls']}, "
            f"apiserver requests {req}"
        )
        return entry, ended

    async def steady_and_rotation(
        self,
        gen: LoadGenerator,
        vols: list[PreparedVolume],
        published_at: float,
        burst_started: float | None = None,
    ) -> None:
        """Idle window and the three passes after `vols` were published (burst from `burst_started` to
        `published_at`, monotonic). The passes' timing follows what both drivers measure the interval
        from: ours from the end of a volume's last refresh, upstream from its files' last write (an
        unchanged pass writes none)."""
        s, interval = self.s, self.s.rotation_interval_s
        assert self.driver is not None
        passes: dict[str, Any] = {}
        # inside the rotation interval: every volume was refreshed after the burst started, so a pass
        # that ends before burst start + interval may refresh nothing
        passes["throttled"], throttled_end = await self.republish_pass(gen, vols, "throttled")
        late = throttled_end - (published_at if burst_started is None else burst_started) - interval
        passes["throttled"]["inside_interval"] = late < 0
        if late >= 0:
            self.say(f"WARNING: throttled pass ended {late:.1f}s past the interval: machine too loaded")
        self.say(f"idle {s.idle_window_s:g}s with {len(vols)} volumes")
        mark = self.audit_mark()
        with procstat.Window(self.driver.pid, interval=0.25) as idle:
            await asyncio.sleep(s.idle_window_s)
        idle_requests = await self.audit_count(mark, settle=0.0)
        steady: dict[str, Any] = {
            "volumes": len(vols),
            "idle": idle.summary(),
            "idle_apiserver": idle_requests,
        }
        # interval elapsed since every volume's last refresh (the burst, or the throttled pass had it
        # refreshed any), provider answers the same: contents and versions unchanged
        last_refresh = throttled_end if passes["throttled"]["provider_calls"] else published_at
        await _sleep_until(last_refresh + interval + PASS_MARGIN_S)
        passes["unchanged"], unchanged_end = await self.republish_pass(gen, vols, "unchanged")
        # provider rotates every object of every pod it has served
        self.provider_control("/rotation?rotated=true")
        await _sleep_until(unchanged_end + interval + PASS_MARGIN_S)
        passes["changed"], _ = await self.republish_pass(gen, vols, "changed")
        passes["changed"]["volumes_rotated"] = sum(1 for v in vols if _first_file(v.target) == b"rotated")
        self.provider_control("/rotation?rotated=false")
        steady["after_passes"] = self.memory()
        steady["republish_peak_rss_mib"] = max(p["driver"]["rss_peak_mib"] for p in passes.values())
        self.result["steady"] = steady
        self.result["rotation"] = passes

    async def large_payloads(self, gen: LoadGenerator, pods: dict[str, list[dict[str, Any]]]) -> None:
        assert self.driver is not None
        out: dict[str, Any] = {}
        for key, label in (("big", "secret_3mib"), ("many", f"files_{self.s.many_files}")):
            vols = [v for p in pods[key] for v in prepare(p, self.kubelet_root)]
            lat: list[float] = []
            errors: list[str] = []
            with procstat.Window(self.driver.pid) as window:
                for vol in vols:  # one at a time: latency of the payload itself, not of a queue
                    batch = await gen.publish([vol])
                    lat += [x * 1000 for x in batch.latencies]
                    errors += batch.errors
            out[label] = {
                "n": len(vols),
                "latencies_ms": [round(x, 2) for x in lat],
                "p50_ms": round(percentile(lat, 50), 2),
                "max_ms": round(max(lat), 2) if lat else None,
                "errors": errors[:3],
                "files_ok": all(_volume_files(v.target) > 0 for v in vols),
                "driver": window.summary(),
                "memory_after": self.memory(),
            }
            self.say(
                f"{label}: p50 {out[label]['p50_ms']} ms, RSS {out[label]['memory_after']['rss_mib']} MiB"
            )
            await gen.unpublish(vols)
        self.result["large"] = out


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _first_file(target: Path) -> bytes | None:
    try:
        names = sorted(p for p in target.iterdir() if not p.name.startswith(".."))
        return names[0].read_bytes() if names else None
    except OSError:
        return None


def _volume_files(target: Path) -> int:
    try:
        return sum(1 for p in target.iterdir() if not p.name.startswith(".."))
    except OSError:
        return 0


def _unmount_all(root: Path) -> None:
    import contextlib

    from sscsi_driver import mounter

    if not root.exists():
        return
    for mount in reversed(mounter.mounts_under(root)):
        with contextlib.suppress(OSError):
            mounter.unmount(mount)
