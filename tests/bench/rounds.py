"""The interleaved schedule of a bench run: `repeats` rounds, each running every driver in turn (ours,
upstream, ours, upstream, ...) so machine noise hits both alike, the RSS and CPU floors probed at the start
of each round; then the cluster filled once for scenario 4 and its rounds in the same order.

Each round has its own node and namespace names (run id + round number) and its own logs directory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import replace
from typing import Any

from . import drivers, fixtures, report, scenarios
from .phase import DriverPhase, run_guarded
from .row_floors import Probes
from .settings import Settings, Shared


async def populate_elsewhere(shared: Shared, pods: int) -> dict[str, Any]:
    """Scenario 4's background: other nodes' pods, SPCs and SPCPS in other namespaces."""
    s, api, run, label = shared.settings, shared.api, shared.run_id, shared.run_label
    started = time.monotonic()
    nodes = [f"bench-{run}-else-{j}" for j in range(s.scale_nodes)]
    namespaces = [f"b-{run}-else-{k}" for k in range(s.scale_namespaces)]
    await fixtures.bounded(fixtures.create_node(api, n, label) for n in nodes)
    await fixtures.bounded(fixtures.create_namespace(api, ns, label) for ns in namespaces)
    obj = fixtures.objects(s.objects_per_volume, s.object_size)
    names = [(namespaces[i % len(namespaces)], f"else-{i:05d}", nodes[i % len(nodes)]) for i in range(pods)]
    await fixtures.bounded((fixtures.create_spc(api, ns, name, obj) for ns, name, _ in names), 32)
    created = await fixtures.bounded(
        (fixtures.create_bench_pod(api, ns, name, node, name) for ns, name, node in names), 32
    )
    await fixtures.bounded(
        (
            fixtures.create_spcps(
                api,
                pod,
                name,
                node,
                f"/var/lib/kubelet/pods/{pod['metadata']['uid']}/volumes/kubernetes.io~csi/secrets/mount",
                s.objects_per_volume,
            )
            for pod, (_, name, node) in zip(created, names, strict=True)
        ),
        32,
    )
    return {
        "nodes": nodes,
        "namespaces": namespaces,
        "pods": len(created),
        "spcs": len(names),
        "spcps": len(created),
        "seconds": round(time.monotonic() - started, 2),
    }


async def run_phase(
    shared: Shared, spec: drivers.DriverSpec, phase: str, settings: Settings
) -> dict[str, Any]:
    sizes = settings.publish_sizes if phase == "base" else (settings.steady_pods,)
    large = settings.large and phase == "base"
    p = DriverPhase(shared, spec, phase, sizes, large)
    return await run_guarded(p, scenarios.run, wait_namespaces=settings.mode == "full")


def round_shared(shared: Shared, index: int, repeats: int) -> Shared:
    """Round `index`'s view of the run: its own names (node, namespaces), logs and progress prefix, so a
    round never meets the objects of the one before (namespaces may still be terminating)."""
    return replace(
        shared,
        run_id=f"{shared.run_id}{index + 1}",
        logs_dir=shared.logs_dir / f"round{index + 1}",
        progress=lambda message: shared.progress(f"r{index + 1}/{repeats} {message}"),
    )


async def measure_floors() -> dict[str, Any]:
    """RSS floors (MiB) of the interpreter our driver runs on, or why they were not measured."""
    try:
        from . import floors
    except ImportError as err:
        return {"error": f"floor not measured: tests/bench/floors.py not importable ({err})"}
    try:
        return dict(await asyncio.to_thread(floors.rss_floors, sys.executable))
    except Exception as err:  # a floor is context for the table, never a reason to lose the run
        return {"error": f"floor not measured: {err!r}"}


async def measure_cpu_floors(shared: Shared) -> dict[str, Any]:
    """CPU floors for the round's calls (bench.cpu_floor.round_floors), or why they were not measured."""
    try:
        from . import cpu_floor
    except ImportError as err:
        return {"error": f"floor not measured: tests/bench/cpu_floor.py not importable ({err})"}
    calls = shared.settings.steady_pods
    try:
        return dict(
            await asyncio.to_thread(cpu_floor.round_floors, sys.executable, str(shared.kubeconfig), calls)
        )
    except Exception as err:  # a floor is context for the table, never a reason to lose the run
        return {"error": f"floor not measured: {err!r}"}


async def run_rounds(
    shared: Shared, specs: dict[str, drivers.DriverSpec], order: list[str], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """`repeats` rounds of every driver in turn (ours, upstream, ours, upstream, ...), floors measured at
    the start of each round; then scenario 4's rounds after filling the cluster once."""
    settings, repeats = shared.settings, args.repeats
    rounds: list[dict[str, Any]] = [
        {"round": i + 1, "order": order, "drivers": {}, "floors": None, "cpu_floors": None}
        for i in range(repeats)
    ]
    for i, rnd in enumerate(rounds):
        started = time.monotonic()
        rs = round_shared(shared, i, repeats)
        if args.floors:
            rnd["floors"] = await measure_floors()
            rs.progress(f"RSS floors: {rnd['floors']}")
            rnd["cpu_floors"] = await measure_cpu_floors(rs)
            rs.progress(f"CPU floors: {rnd['cpu_floors']}")
        for name in order:
            rs.progress(f"== {name}: scenarios 1, 2, 3{', 5' if settings.large else ''}")
            rnd["drivers"][name] = {"base": await run_phase(rs, specs[name], "base", settings)}
        rnd["wall_s"] = round(time.monotonic() - started, 1)
        rs.progress(f"round done in {rnd['wall_s']}s")
    elsewhere = None
    if settings.scale_factor and not args.no_scale:
        pods = settings.scale_factor * settings.steady_pods
        shared.progress(f"== scenario 4: {pods} pods + SPCs + SPCPS on {settings.scale_nodes} other nodes")
        elsewhere = await populate_elsewhere(shared, pods)
        shared.progress(f"   created in {elsewhere['seconds']}s")
        try:
            for i, rnd in enumerate(rounds):
                rs = round_shared(shared, i, repeats)
                for name in order:
                    rs.progress(f"== {name}: scenario 4 (10x elsewhere)")
                    rnd["drivers"][name]["scale"] = await run_phase(rs, specs[name], "scale", settings)
        finally:
            await fixtures.delete_namespaces(shared.api, elsewhere["namespaces"])
            await fixtures.delete_nodes(shared.api, elsewhere["nodes"])
    return rounds, elsewhere


def _summary(runs: list[dict[str, Any]], what: str) -> tuple[dict[str, Any], str | None]:
    summary = report.floor_spreads(runs)
    errors = sorted({str(r["error"]) for r in runs if r.get("error")})
    error = None if summary else (errors[0] if errors else f"{what} not measured (--no-floors or --smoke)")
    return {k: v.as_dict() for k, v in summary.items()}, error


def floors_doc(rounds: list[dict[str, Any]], measured: bool) -> dict[str, Any]:
    """The run's floors: RSS per import set (top level) and CPU (`cpu`), every round and the summary."""
    runs = [r["floors"] for r in rounds if isinstance(r.get("floors"), dict)]
    cpu_runs = [r["cpu_floors"] for r in rounds if isinstance(r.get("cpu_floors"), dict)]
    summary, error = _summary(runs, "floor")
    cpu_summary, cpu_error = _summary(cpu_runs, "floor")
    return {
        "python": sys.executable,
        "measured": measured,
        "imports": _floor_imports(),
        "runs": runs,
        "summary": summary,
        "error": error,
        "cpu": {"runs": cpu_runs, "summary": cpu_summary, "error": cpu_error},
    }


def probes(doc: dict[str, Any]) -> Probes:
    """The floors of `floors_doc` as the table reads them."""
    cpu = doc.get("cpu") or {}
    return Probes(
        rss=report.floor_spreads(doc.get("runs") or []),
        cpu=report.floor_spreads(cpu.get("runs") or []),
        rss_error=doc.get("error"),
        cpu_error=cpu.get("error"),
    )


def _floor_imports() -> dict[str, list[str]] | None:
    try:
        from . import floors
    except ImportError:
        return None
    return {k: list(v) for k, v in getattr(floors, "FLOOR_IMPORTS", {}).items()}
