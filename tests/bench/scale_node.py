"""A node at its limits: 250 pods with 2 volumes each (500 volumes) on one driver.

The bench's `DriverPhase` with another pod shape: each pod has two CSI volumes, each volume its own
SecretProviderClass. A freshly started driver gets all 500 NodePublishVolume calls at once (kubelet
at node start), then the steady state and the three republish passes of scenarios 2 and 3.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any

from harness.loadgen import LoadGenerator, PreparedVolume

from . import drivers
from .latency import without_samples
from .phase import DriverPhase, run_guarded
from .scenarios import publish_burst, steady_and_rotation
from .settings import Settings, Shared
from .volume_files import file_count

VOLUMES_PER_POD = 2


def node_settings(base: Settings, pods: int) -> Settings:
    """The bench's settings with one publish size (the pod count) and no large payloads."""
    return dataclasses.replace(base, publish_sizes=(pods,), large=False, scale_factor=0)


async def run_node(p: DriverPhase) -> dict[str, Any]:
    """One fresh driver, all of the phase's pods published at once, then scenarios 2 and 3."""
    pods_count = p.sizes[0]
    t0 = time.monotonic()
    await p.setup()
    key = f"n{pods_count}"
    vols = await p.land(key)  # bound before the driver starts: kubelet at node start
    p.result = {
        "node": p.node,
        "namespaces": len(p.namespaces),
        "pods": pods_count,
        "volumes_per_pod": p.volumes_per_pod,
        "setup_s": round(time.monotonic() - t0, 2),
    }
    gen: LoadGenerator | None = None
    try:
        gen = await p.start_driver()
        p.result["baseline"] = p.memory()
        entry, vols, burst_started, burst_ended = await publish_burst(p, gen, partial(_ready, vols))
        entry["volumes"] = len(vols)
        entry["volumes_with_files"] = sum(1 for v in vols if file_count(v.target) > 0)
        p.say(
            f"published {entry['ok']}/{len(vols)}: p50 {entry['p50_ms']} ms, p99 {entry['p99_ms']} ms, "
            f"CPU {entry['driver']['cpu_seconds']} s"
        )
        p.result["publish"] = entry
        await steady_and_rotation(p, gen, vols, burst_ended, burst_started)
        p.result["unpublish"] = without_samples(await gen.unpublish(vols))
        p.result["final_memory"] = p.memory()
        p.result["driver_alive"] = p.driver is not None and p.driver.alive()
    finally:
        await p.stop_driver(gen)
    return p.result


async def _ready(vols: list[PreparedVolume]) -> list[PreparedVolume]:
    return vols


async def run_node_limit(
    shared: Shared, spec: drivers.DriverSpec, settings: Settings, pods: int
) -> dict[str, Any]:
    phase_shared = dataclasses.replace(shared, settings=node_settings(settings, pods))
    phase = DriverPhase(phase_shared, spec, "node", (pods,), False, volumes_per_pod=VOLUMES_PER_POD)
    return await run_guarded(phase, run_node, wait_namespaces=settings.mode == "full")
