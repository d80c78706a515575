"""A bench phase: one driver under test on its own node, set up for the scenarios of `scenarios.py`.

One `DriverPhase` = one driver binary on its own node name, namespaces, provider process and kubelet
directory, against the shared apiserver. Its pods: for each publish size N, N pods with
`volumes_per_pod` CSI volumes each (every volume its own SecretProviderClass), spread over the phase's
namespaces; with `large`, the 3 MiB-secret and 100-file pods of scenario 5. Their SPCs exist from the
setup; a scenario binds a group's pods to the node when it wants them (`land`): on a running driver, as
new pods arrive, or before a driver starts, as at node start. The driver may be started more than once
per phase (a fresh process per publish size).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.loadgen import LoadGenerator, PreparedVolume, prepare

from . import drivers, fixtures, procstat
from .audit import Mark
from .node_run import NodeRun
from .settings import Settings

MIB = procstat.MIB


@dataclass
class DriverPhase(NodeRun):
    sizes: tuple[int, ...]
    large: bool
    volumes_per_pod: int = 1
    driver_starts: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, fixtures.PodGroup] = field(default_factory=dict)
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def s(self) -> Settings:
        return self.shared.settings

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

    # ---- the driver process ----

    async def start_driver(self) -> LoadGenerator:
        """A fresh driver process and a load generator on its socket, after its start-up settled."""
        self.driver_starts += 1
        log = self.shared.logs_dir / f"{self.spec.name}-{self.phase}-driver.log"
        driver = await self.launch_driver(self.spec, self.s.rotation_interval_s, log)
        if self.shared.py_spy_dir is not None and self.spec.name == drivers.OURS:
            self.start_profiler()
        gen = LoadGenerator(self.workdir / "csi.sock")
        await gen.wait_ready()
        await asyncio.sleep(self.s.settle_s)  # initial lists/watches, as a node would before pods land
        if not driver.alive():
            raise RuntimeError(f"{self.spec.name} driver died:\n{driver.log_tail()}")
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

    async def setup(self) -> None:
        """Node, namespaces, SPCs, the provider; the pods' groups (`land` binds them to the node):
        "n<N>" per publish size, "big" and "many" for scenario 5."""
        run, short = self.shared.run_id, self.spec.name[0] + self.phase[0]
        await self.create_node(
            f"bench-{run}-{self.spec.name}-{self.phase}",
            [f"b-{run}-{short}-{k}" for k in range(self.s.namespaces_per_driver)],
            self.shared.workroot / f"{self.spec.name}-{self.phase}",
        )
        api, namespaces = self.shared.api, tuple(self.namespaces)
        obj = fixtures.objects(self.s.objects_per_volume, self.s.object_size)
        for size in self.sizes:
            group = fixtures.PodGroup(namespaces, f"p{size}", size, self.volumes_per_pod)
            await group.create_spcs(api, obj)
            self.groups[f"n{size}"] = group
        if self.large:
            big = fixtures.objects_param_sized(self.s.large_secret_bytes)
            many = fixtures.objects(self.s.many_files, self.s.object_size, prefix="file")
            for key, obj_yaml in (("big", big), ("many", many)):
                group = fixtures.PodGroup(namespaces[:1], key, self.s.large_repeats)
                await group.create_spcs(api, obj_yaml)
                self.groups[key] = group
        # one provider log per phase: start_provider names it after the provider
        await self.start_provider(self.shared.logs_dir)

    async def land(self, key: str) -> list[PreparedVolume]:
        """The group's pods, bound to the node now; their volumes as kubelet will publish them."""
        pods = await self.groups[key].create_pods(self.shared.api, self.node)
        return [v for pod in pods for v in prepare(pod, self.kubelet_root)]

    async def leave(self, key: str) -> None:
        """The group's pods deleted (after their volumes were unpublished)."""
        await self.groups[key].delete_pods(self.shared.api)

    async def teardown(self, wait_namespaces: bool) -> None:
        waited = await self.remove(wait_namespaces)
        self.result["cleanup_wait_s"] = round(waited, 2)


async def run_guarded(
    p: DriverPhase, body: Callable[[DriverPhase], Awaitable[dict[str, Any]]], wait_namespaces: bool
) -> dict[str, Any]:
    """`body(p)`'s figures; when it fails, what it measured so far with the error and the driver's log
    tail (the other driver's figures are kept). The phase is torn down either way."""
    started = time.monotonic()
    try:
        result = await body(p)
    except Exception as err:
        p.say(f"FAILED: {err!r}")
        result = dict(p.result, error=repr(err))
        if p.driver is not None:
            result["driver_log_tail"] = p.driver.log_tail(2000)
    finally:
        # the next phase must not pay for this one's namespace deletion
        await p.teardown(wait_namespaces)
    result["phase_s"] = round(time.monotonic() - started, 2)
    return result
