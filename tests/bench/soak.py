"""Soak: pod churn (create, publish, unpublish, delete) with rotation, for one driver, sampled every tick.

Every tick (10 s): sample the driver's RSS, open fds, threads and tasks (at that moment none of our calls
is in flight), flip the provider's rotation (every object changes), create and publish new pods (each with
its own SecretProviderClass), republish every mounted volume (kubelet's requiresRepublish; the driver's
rotation interval is shorter than a tick, so each pass refreshes), then unpublish and delete the oldest
pods beyond the pool size. Tasks: ours through bench.task_probe (asyncio.all_tasks() in the driver's
loop); upstream's goroutines from its go_goroutines metric when it serves one.
Flat: RSS slope after warm-up < 1 MiB per 10 minutes, fds/tasks/threads within +-2 of their value at
the end of warm-up: the median of the last minute's samples against the median of the first minute
after warm-up (one sample can catch a keep-alive connection opening or expiring; a leak moves the median).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.loadgen import LoadGenerator, PreparedVolume, prepare
from sscsi_kube.resources import POD, SPC

from . import drivers, fixtures, procstat, task_probe
from .node_run import NodeRun
from .settings import Shared

TESTS_DIR = Path(__file__).resolve().parents[1]
SLOPE_LIMIT_MIB = 1.0
COUNT_TOLERANCE = 2
COUNT_WINDOW_S = 60.0


@dataclass(frozen=True)
class SoakSettings:
    duration_s: float = 1200.0  # 10 min measure mostly the heap settling (README "Soak: what grows")
    tick_s: float = 10.0
    warmup_s: float = 120.0
    pool_pods: int = 12  # pods mounted at any time
    churn_per_tick: int = 3  # pods created and deleted per tick
    rotation_interval_s: float = 5.0  # the driver's; < tick_s, so every republish pass refreshes
    objects_per_volume: int = 5
    object_size: int = 1024
    namespaces: int = 2


def slope_per_10min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB), in MiB per 10 minutes."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / den * 600.0


def analyse(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Slope of RSS after warm-up; fds/threads/tasks in the last minute against the first after warm-up."""
    after = [s for s in samples if s["t"] >= warmup_s] or samples[-3:]
    slope = slope_per_10min([(s["t"], s["rss_mib"]) for s in after])
    # A leak grows with the pods churned, so at the same rate in every window; what the allocators
    # keep while their heaps settle slows down (bench/README.md "Soak: what grows"). Reported, not judged.
    half = (after[0]["t"] + after[-1]["t"]) / 2 if after else 0.0
    late = slope_per_10min([(s["t"], s["rss_mib"]) for s in after if s["t"] >= half])
    out: dict[str, Any] = {
        "samples_after_warmup": len(after),
        "rss_baseline_mib": after[0]["rss_mib"] if after else None,
        "rss_end_mib": after[-1]["rss_mib"] if after else None,
        "rss_max_mib": max(s["rss_mib"] for s in after) if after else None,
        "rss_slope_mib_per_10min": None if slope is None else round(slope, 3),
        "rss_slope_last_half_mib_per_10min": None if late is None else round(late, 3),
    }
    flat = slope is not None and slope < SLOPE_LIMIT_MIB
    for key in ("fds", "threads", "tasks"):
        counted = [s for s in after if s.get(key) is not None]
        if not counted:
            out[key] = None  # not observable for this driver
            continue
        values = [s[key] for s in counted]
        start, stop = counted[0]["t"] + COUNT_WINDOW_S, counted[-1]["t"] - COUNT_WINDOW_S
        baseline = statistics.median_low([s[key] for s in counted if s["t"] < start])
        end = statistics.median_low([s[key] for s in counted if s["t"] > stop])
        delta = end - baseline
        out[key] = {
            "baseline": baseline,
            "end": end,
            "last": values[-1],
            "min": min(values),
            "max": max(values),
            "delta": delta,
        }
        flat = flat and abs(delta) <= COUNT_TOLERANCE
    out["flat"] = flat
    return out


def _goroutines(metrics_url: str) -> int | None:
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("go_goroutines "):
            return int(float(line.split()[1]))
    return None


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class SoakRun(NodeRun):
    ss: SoakSettings
    tasks_file: Path | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)

    def probed_spec(self) -> drivers.DriverSpec:
        """Ours runs under bench.task_probe (same process, same flags) through a small launcher."""
        if self.spec.name != drivers.OURS:
            return self.spec
        self.tasks_file = self.workdir / "tasks.json"
        launcher = self.workdir / "driver-with-task-probe"
        path = os.pathsep.join(
            [str(TESTS_DIR), str(TESTS_DIR.parent / "hack"), os.environ.get("PYTHONPATH", "")]
        )
        launcher.write_text(
            "#!/bin/sh\n"
            f"export {task_probe.ENV}='{self.tasks_file}' PYTHONPATH='{path}'\n"
            f"exec '{sys.executable}' -m bench.task_probe \"$@\"\n"
        )
        launcher.chmod(0o755)
        return dataclasses.replace(self.spec, binary=launcher)

    def sample(self, t: float) -> dict[str, Any]:
        assert self.driver is not None
        pid = self.driver.pid
        rss, _ = self.driver.memory_mib()
        entry: dict[str, Any] = {
            "t": round(t, 1),
            "rss_mib": round(rss, 2),
            "fds": _fds(pid),
            "threads": procstat.threads(pid),
            "cpu_s": round(procstat.cpu_seconds(pid), 2),
            "mounted": self.counts["mounted"],
        }
        if self.tasks_file is not None:
            snap = task_probe.read(self.tasks_file)
            entry["tasks"] = snap["tasks"] if snap else None
            entry["task_kinds"] = snap["top"] if snap else None
        else:
            entry["tasks"] = _goroutines(self.metrics_url)  # Go: goroutines (None when not served)
        self.samples.append(entry)
        return entry

    async def setup(self) -> None:
        run, name = self.shared.run_id, self.spec.name
        await self.create_node(
            f"bench-{run}-{name}-soak",
            [f"s-{run}-{name[0]}-{k}" for k in range(self.ss.namespaces)],
            self.shared.workroot / f"{name}-soak",
        )
        await self.start_provider(self.shared.logs_dir / f"soak-{name}")
        log = self.shared.logs_dir / f"soak-{name}-driver.log"
        await self.launch_driver(self.probed_spec(), self.ss.rotation_interval_s, log)

    async def new_pods(self, seq: int) -> list[tuple[str, str, list[PreparedVolume]]]:
        api, obj = self.shared.api, fixtures.objects(self.ss.objects_per_volume, self.ss.object_size)

        async def one(i: int) -> tuple[str, str, list[PreparedVolume]]:
            ns, name = self.namespaces[i % len(self.namespaces)], f"soak-{i:05d}"
            await fixtures.create_spc(api, ns, name, obj)
            pod = await fixtures.create_bench_pod(api, ns, name, self.node, name)
            return ns, name, prepare(pod, self.kubelet_root)

        return await asyncio.gather(*(one(seq + k) for k in range(self.ss.churn_per_tick)))

    async def retire(self, gen: LoadGenerator, pods: list[tuple[str, str, list[PreparedVolume]]]) -> None:
        api = self.shared.api
        batch = await gen.unpublish([v for _, _, vols in pods for v in vols])
        self.errors += batch.errors[:3]
        self.counts["unpublished"] += len(batch.latencies)
        for ns, name, _ in pods:
            await api.delete(POD, name, ns, missing_ok=True)
            await api.delete(SPC, name, ns, missing_ok=True)
            self.counts["deleted"] += 1

    async def run(self) -> dict[str, Any]:
        await self.setup()
        assert self.driver is not None
        gen = LoadGenerator(self.workdir / "csi.sock")
        await gen.wait_ready()
        audit = self.shared.audit
        mark = audit.mark(time.time()) if audit.available() else None
        pool: collections.deque[tuple[str, str, list[PreparedVolume]]] = collections.deque()
        start, tick, rotated = time.monotonic(), 0, False
        try:
            while (now := time.monotonic()) - start < self.ss.duration_s:
                if not self.driver.alive():
                    raise RuntimeError(f"driver exited:\n{self.driver.log_tail()}")
                self.sample(now - start)
                rotated = not rotated
                await asyncio.to_thread(self.provider_control, f"/rotation?rotated={str(rotated).lower()}")
                fresh = await self.new_pods(tick * self.ss.churn_per_tick)
                self.counts["created"] += len(fresh)
                batch = await gen.publish([v for _, _, vols in fresh for v in vols])
                self.errors += batch.errors[:3]
                self.counts["published"] += len(batch.latencies)
                pool.extend(fresh)
                mounted = [v for _, _, vols in pool for v in vols]
                again = await gen.republish(mounted)
                self.errors += again.errors[:3]
                self.counts["republished"] += len(again.latencies)
                old = [pool.popleft() for _ in range(max(0, len(pool) - self.ss.pool_pods))]
                await self.retire(gen, old)
                self.counts["mounted"] = len(pool)
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * self.ss.tick_s - time.monotonic()))
            self.sample(time.monotonic() - start)
            await self.retire(gen, list(pool))
        finally:
            await gen.close()
        reqs = audit.count(mark, time.time(), self.matcher()).as_dict() if mark else None
        minutes = (time.monotonic() - start) / 60.0
        return {
            "node": self.node,
            "settings": dataclasses.asdict(self.ss),
            "seconds": round(time.monotonic() - start, 1),
            "ticks": tick,
            "counts": dict(self.counts),
            "errors": self.errors[:10],
            "samples": self.samples,
            "tasks_source": "bench.task_probe: asyncio.all_tasks() in the driver's loop"
            if self.tasks_file
            else "go_goroutines metric (goroutines, not tasks)",
            "apiserver_requests_per_min": None if reqs is None else round(reqs["requests"] / minutes, 1),
            "analysis": analyse(self.samples, self.ss.warmup_s),
            "driver_alive": self.driver.alive(),
        }

    async def teardown(self) -> None:
        await self.remove(wait_namespaces=False)


async def run_soak(shared: Shared, spec: drivers.DriverSpec, ss: SoakSettings) -> dict[str, Any]:
    soak = SoakRun(shared, spec, "soak", ss)
    try:
        result = await soak.run()
    except Exception as err:  # keep the other driver's soak; say what broke
        shared.progress(f"[{spec.name}/soak] FAILED: {err!r}")
        result = {"error": repr(err), "samples": soak.samples}
        if soak.driver is not None:
            result["driver_log_tail"] = soak.driver.log_tail(2000)
    finally:
        await soak.teardown()
    a = result.get("analysis") or {}
    shared.progress(
        f"[{spec.name}/soak] RSS slope {a.get('rss_slope_mib_per_10min')} MiB/10 min, flat: {a.get('flat')}"
    )
    return result
