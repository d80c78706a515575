"""The scenarios of issue 7, run against one driver at a time (`phase.DriverPhase` sets each up):

1. publish latency: for each N, a fresh driver process sees N pods land on its node (bound at once) and
   gets their volumes at once, kubelet's lead (`KUBELET_LEAD_S`) after the last of them was bound;
2. steady state: RSS/CPU with the largest N mounted, idle, and during each republish pass;
3. rotation: republish passes over all volumes: throttled (inside the rotation interval),
   unchanged (interval elapsed, provider returns the same), changed (provider rotated everything);
   each with its duration, CPU, provider calls and the driver's apiserver requests (audit log);
5. large payloads: a 3 MiB secret and a 100-file volume, published one at a time.
Scenario 4 is the same phase run again after `rounds.py` filled the cluster with other nodes' work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from harness.loadgen import LoadGenerator, PreparedVolume

from . import procstat
from .latency import batch_stats, percentile, without_samples
from .phase import DriverPhase
from .volume_files import file_count, first_file

PASS_MARGIN_S = 1.0  # a pass due after the interval starts this much later than strictly needed
# From a pod's binding to its NodePublishVolume, kubelet's volume manager adds the pod's volumes on a
# turn of its populator loop, then mounts them on a turn of its reconciler loop (100 ms each): about
# 100 ms on average. A driver that prepares for a pod when it lands has this long to do it.
KUBELET_LEAD_S = 0.1


async def run(p: DriverPhase) -> dict[str, Any]:
    """Scenarios 1, 2, 3 (and 5 when the phase has large payloads) on one phase's driver."""
    t0 = time.monotonic()
    await p.setup()
    p.result = {"node": p.node, "namespaces": len(p.namespaces), "setup_s": round(time.monotonic() - t0, 2)}
    gen: LoadGenerator | None = None
    try:
        publish: dict[str, Any] = {}
        steady_vols: list[PreparedVolume] = []
        burst_started = burst_ended = 0.0
        for size in p.sizes:
            gen = await p.start_driver()
            if "baseline" not in p.result:
                p.result["baseline"] = p.memory()
            key = f"n{size}"
            entry, vols, burst_started, burst_ended = await publish_burst(p, gen, partial(landed, p, key))
            publish[str(size)] = entry
            if size != max(p.sizes):
                entry["unpublish"] = without_samples(await gen.unpublish(vols))
                await p.leave(key)  # gone before the next driver starts: it must not see them land
                await p.stop_driver(gen)
                gen = None
            else:
                steady_vols = vols
        p.result["publish"] = publish
        assert gen is not None
        await steady_and_rotation(p, gen, steady_vols, burst_ended, burst_started)
        if p.large:
            await large_payloads(p, gen)
        p.say(f"unpublish {len(steady_vols)} volumes at once")
        p.result["unpublish"] = without_samples(await gen.unpublish(steady_vols))
        p.result["final_memory"] = p.memory()
        p.result["driver_starts"] = p.driver_starts
        p.result["driver_alive"] = p.driver is not None and p.driver.alive()
    finally:
        await p.stop_driver(gen)
    return p.result


async def landed(p: DriverPhase, key: str) -> list[PreparedVolume]:
    """The group's pods bound to the node; their volumes, kubelet's lead later."""
    vols = await p.land(key)
    await asyncio.sleep(KUBELET_LEAD_S)
    return vols


async def publish_burst(
    p: DriverPhase, gen: LoadGenerator, volumes: Callable[[], Awaitable[list[PreparedVolume]]]
) -> tuple[dict[str, Any], list[PreparedVolume], float, float]:
    """The volumes `volumes()` returns, published at once: the figures, the volumes, and when the
    burst started and ended (monotonic). The driver's CPU and requests count from before `volumes()`
    (pods landing on the node may already cost a driver work)."""
    assert p.driver is not None
    mark = p.audit_mark()
    calls = p.provider_calls()
    with procstat.Window(p.driver.pid) as window:
        before = time.monotonic()
        vols = await volumes()
        p.say(f"publish {len(vols)} volumes at once")
        started = time.monotonic()
        batch = await gen.publish(vols)
    ended = time.monotonic()
    entry = batch_stats(batch)
    entry["landing_s"] = round(started - before, 3)
    entry["driver"] = window.summary()
    entry["provider_calls"] = p.provider_calls() - calls
    entry["apiserver"] = await p.audit_count(mark)
    entry["memory_after"] = p.memory()
    if batch.errors:
        p.say(f"publish errors: {batch.errors[:3]}")
    return entry, vols, started, ended


async def republish_pass(
    p: DriverPhase, gen: LoadGenerator, vols: list[PreparedVolume], kind: str
) -> tuple[dict[str, Any], float]:
    """One pass over `vols`: its figures, and when its last call returned (monotonic)."""
    assert p.driver is not None
    mark = p.audit_mark()
    calls = p.provider_calls()
    with procstat.Window(p.driver.pid) as window:
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
        "provider_calls": p.provider_calls() - calls,
        "driver": window.summary(),
        "apiserver": await p.audit_count(mark),
    }
    req = (entry["apiserver"] or {}).get("requests")
    p.say(
        f"{kind} republish pass: {entry['duration_s']}s, provider calls {entry['provider_calls']}, "
        f"apiserver requests {req}"
    )
    return entry, ended


async def steady_and_rotation(
    p: DriverPhase,
    gen: LoadGenerator,
    vols: list[PreparedVolume],
    published_at: float,
    burst_started: float | None = None,
) -> None:
    """Idle window and the three passes after `vols` were published (burst from `burst_started` to
    `published_at`, monotonic). The passes' timing follows what both drivers measure the interval
    from: ours from the end of a volume's last refresh, upstream from its files' last write (an
    unchanged pass writes none)."""
    s, interval = p.s, p.s.rotation_interval_s
    assert p.driver is not None
    passes: dict[str, Any] = {}
    # inside the rotation interval: every volume was refreshed after the burst started, so a pass
    # that ends before burst start + interval may refresh nothing
    passes["throttled"], throttled_end = await republish_pass(p, gen, vols, "throttled")
    late = throttled_end - (published_at if burst_started is None else burst_started) - interval
    passes["throttled"]["inside_interval"] = late < 0
    if late >= 0:
        p.say(f"WARNING: throttled pass ended {late:.1f}s past the interval: machine too loaded")
    p.say(f"idle {s.idle_window_s:g}s with {len(vols)} volumes")
    mark = p.audit_mark()
    with procstat.Window(p.driver.pid, interval=0.25) as idle:
        await asyncio.sleep(s.idle_window_s)
    idle_requests = await p.audit_count(mark, settle=0.0)
    steady: dict[str, Any] = {"volumes": len(vols), "idle": idle.summary(), "idle_apiserver": idle_requests}
    # interval elapsed since every volume's last refresh (the burst, or the throttled pass had it
    # refreshed any), provider answers the same: contents and versions unchanged
    last_refresh = throttled_end if passes["throttled"]["provider_calls"] else published_at
    await _sleep_until(last_refresh + interval + PASS_MARGIN_S)
    passes["unchanged"], unchanged_end = await republish_pass(p, gen, vols, "unchanged")
    # provider rotates every object of every pod it has served
    p.provider_control("/rotation?rotated=true")
    await _sleep_until(unchanged_end + interval + PASS_MARGIN_S)
    passes["changed"], _ = await republish_pass(p, gen, vols, "changed")
    passes["changed"]["volumes_rotated"] = sum(1 for v in vols if first_file(v.target) == b"rotated")
    p.provider_control("/rotation?rotated=false")
    steady["after_passes"] = p.memory()
    steady["republish_peak_rss_mib"] = max(x["driver"]["rss_peak_mib"] for x in passes.values())
    p.result["steady"] = steady
    p.result["rotation"] = passes


async def large_payloads(p: DriverPhase, gen: LoadGenerator) -> None:
    assert p.driver is not None
    out: dict[str, Any] = {}
    for key, label in (("big", "secret_3mib"), ("many", f"files_{p.s.many_files}")):
        vols = await landed(p, key)
        lat: list[float] = []
        errors: list[str] = []
        with procstat.Window(p.driver.pid) as window:
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
            "files_ok": all(file_count(v.target) > 0 for v in vols),
            "driver": window.summary(),
            "memory_after": p.memory(),
        }
        p.say(f"{label}: p50 {out[label]['p50_ms']} ms, RSS {out[label]['memory_after']['rss_mib']} MiB")
        await gen.unpublish(vols)
    p.result["large"] = out


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
