"""Scale benchmark: bigger nodes, bigger clusters and a soak, our driver next to the upstream Go driver.

    make bench-scale                                        # all of it, one run each (< 45 min on 2 cores)
    PYTHONPATH=tests:hack .venv/bin/python -m bench.scale --only cluster --nodes 10,25
    PYTHONPATH=tests:hack .venv/bin/python -m bench.scale --smoke      # seconds; tests/e2e

Parts (--only, comma list): node (250 pods x 2 volumes on one driver), cluster (M simulated nodes per
driver, M in --nodes), soak (pod churn with rotation, both drivers at once unless --soak-serial).
Same harness as `python -m bench` (drivers, fixtures, load generator, /proc sampling, audit log).
Writes <out>/bench-scale[-smoke]-<timestamp>.json (+ .png) and latest-scale[-smoke].json/.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sscsi_kube import KubeClient
from versions_env import versions as read_versions

from . import drivers, leftovers, scale_report
from .audit import AuditLog
from .run import REPO, apply_crds, cluster_dir, ensure_cluster, environment
from .scale_cluster import ClusterSettings, ProviderPool, run_cluster
from .scale_node import run_node_limit
from .settings import Settings, Shared
from .soak import SoakSettings, run_soak

PARTS = ("node", "cluster", "soak")


@dataclass(frozen=True)
class ScaleSettings:
    mode: str
    node_pods: int = 250
    # 500 volumes: upstream's burst alone takes ~30 s (client-go's 20 QPS), so the bench's 10 s interval would
    # have every "throttled" pass refresh; 45 s keeps the throttled pass inside the interval for both
    node_base: Settings = field(default_factory=lambda: replace(Settings.full(), rotation_interval_s=45.0))
    cluster_sizes: tuple[int, ...] = (10, 25, 50)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    soak: SoakSettings = field(default_factory=SoakSettings)

    @classmethod
    def smoke(cls) -> ScaleSettings:
        return cls(
            mode="scale-smoke",
            node_pods=3,
            node_base=Settings.smoke(),
            cluster_sizes=(1, 2),
            cluster=ClusterSettings(
                pods_per_node=2,
                namespaces=2,
                rotation_interval_s=2.0,
                settle_s=1.0,
                idle_window_s=3.0,
                wave_window_s=2.0,
            ),
            soak=SoakSettings(
                duration_s=20.0,
                tick_s=4.0,
                warmup_s=4.0,
                pool_pods=3,
                churn_per_tick=2,
                rotation_interval_s=2.0,
            ),
        )


def settings_from(args: argparse.Namespace) -> ScaleSettings:
    s = ScaleSettings.smoke() if args.smoke else ScaleSettings(mode="scale")
    if args.nodes:
        s = replace(s, cluster_sizes=tuple(sorted({int(x) for x in args.nodes.split(",") if x.strip()})))
    if args.node_pods:
        s = replace(s, node_pods=args.node_pods)
    if args.pods_per_node:
        s = replace(s, cluster=replace(s.cluster, pods_per_node=args.pods_per_node))
    if args.idle_seconds:
        s = replace(s, cluster=replace(s.cluster, idle_window_s=args.idle_seconds))
    if args.soak_minutes:
        s = replace(s, soak=replace(s.soak, duration_s=args.soak_minutes * 60.0))
    return s


async def main_async(args: argparse.Namespace, versions: dict[str, str], kubeconfig: Path) -> dict[str, Any]:
    s = settings_from(args)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    started_wall, started = time.time(), time.monotonic()
    out_dir = Path(args.out)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = secrets.token_hex(3)
    logs_dir = out_dir / "logs" / f"{s.mode}-{stamp}"
    selection = drivers.select(args.drivers, versions)
    specs, order, skipped = selection.specs, selection.order, selection.skipped

    def progress(message: str) -> None:
        print(f"{time.monotonic() - started:7.1f}s {message}", flush=True)

    api = KubeClient.from_config(str(kubeconfig), "sscsi-bench/loadgen", timeout=30.0)
    workroot = Path(tempfile.mkdtemp(prefix=f"sscsi-scale-{run_id}-"))
    shared = Shared(
        api=api,
        audit=AuditLog(cluster_dir() / "logs" / "audit.log"),
        kubeconfig=kubeconfig,
        run_id=run_id,
        workroot=workroot,
        logs_dir=logs_dir,
        settings=s.node_base,
        progress=progress,
    )
    full = s.mode == "scale"
    doc: dict[str, Any] = {
        "schema": 1,
        "mode": s.mode,
        "started_at": datetime.fromtimestamp(started_wall, UTC).isoformat(),
        "run_id": run_id,
        "environment": environment(versions, specs),
        "config": {
            "parts": parts,
            "drivers": order,
            "skipped": skipped,
            "node_pods": s.node_pods,
            "node_volumes_per_pod": 2,
            "cluster_sizes": list(s.cluster_sizes),
            "cluster": asdict(s.cluster),
            "soak": asdict(s.soak),
            "soak_concurrent": not args.soak_serial,
            "audit_log": str(shared.audit.path),
        },
    }
    pool = ProviderPool(workroot / "cluster-providers", logs_dir)
    try:
        await leftovers.before_run(api, args.leftovers_minutes, 120.0 if full else 0.0, progress)
        if "node" in parts:
            doc["node"] = {}
            for name in order:
                progress(f"== {name}: node with {s.node_pods} pods x 2 volumes")
                doc["node"][name] = await run_node_limit(shared, specs[name], s.node_base, s.node_pods)
        if "cluster" in parts:
            doc["cluster"] = {name: {} for name in order}
            for m in s.cluster_sizes:
                for name in order:
                    progress(f"== {name}: cluster of {m} simulated nodes")
                    doc["cluster"][name][str(m)] = await run_cluster(
                        shared, specs[name], m, s.cluster, pool, full
                    )
            pool.stop()
        if "soak" in parts:
            minutes = s.soak.duration_s / 60
            progress(
                f"== soak {minutes:g} min: {', '.join(order)} {'in turn' if args.soak_serial else 'at once'}"
            )
            if args.soak_serial:
                doc["soak"] = {name: await run_soak(shared, specs[name], s.soak) for name in order}
            else:
                results = await asyncio.gather(*(run_soak(shared, specs[name], s.soak) for name in order))
                doc["soak"] = dict(zip(order, results, strict=True))
    finally:
        pool.stop()
        await leftovers.after_run(api, run_id, progress)
        await api.close()
        shutil.rmtree(workroot, ignore_errors=True)

    doc["flat_at_cluster_scale"] = scale_report.flat_verdicts(doc)
    doc["duration_s"] = round(time.monotonic() - started, 1)
    base = out_dir / f"bench-{s.mode}-{stamp}"
    json_path, png_path = base.with_suffix(".json"), base.with_suffix(".png")
    doc["artifacts"] = {"json": str(json_path), "png": str(png_path), "logs": str(logs_dir)}
    chart_error = None if args.no_chart else scale_report.chart(doc, png_path)
    if chart_error or args.no_chart:
        doc["artifacts"]["png"] = None
        doc["artifacts"]["png_skipped"] = chart_error or "--no-chart"
    json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    for src in (json_path, png_path):
        if src.exists():
            shutil.copyfile(src, out_dir / f"latest-{s.mode}{src.suffix}")
    print()
    print(scale_report.table(doc))
    print(f"JSON: {json_path}")
    print(f"PNG:  {doc['artifacts']['png'] or doc['artifacts'].get('png_skipped')}")
    print(f"logs: {logs_dir}")
    print(f"total {doc['duration_s']}s")
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (M=1,2; 3 pods; 20 s soak) for make test")
    p.add_argument("--only", default=",".join(PARTS), help="comma list of parts (default: %(default)s)")
    p.add_argument("--nodes", default="", help="cluster sizes M, comma list (default: 10,25,50)")
    p.add_argument("--node-pods", type=int, default=0, help="pods (2 volumes each) of the node part (250)")
    p.add_argument("--pods-per-node", type=int, default=0, help="pods per simulated node (8)")
    p.add_argument("--idle-seconds", type=float, default=0, help="cluster idle window (60)")
    p.add_argument("--soak-minutes", type=float, default=0, help="soak duration (20)")
    p.add_argument("--soak-serial", action="store_true", help="soak one driver after the other")
    p.add_argument(
        "--drivers", default="ours,upstream", help="comma list, run in this order (default: %(default)s)"
    )
    p.add_argument(
        "--out", default=str(REPO / "bench-results"), help="results directory (default: %(default)s)"
    )
    p.add_argument("--kubeconfig", default=None, help="use this cluster instead of hack/cluster-up.sh's")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG")
    leftovers.add_age_option(p)
    args = p.parse_args(argv)
    unknown = {x.strip() for x in args.only.split(",")} - set(PARTS) - {""}
    if unknown:
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    return args


def failures(doc: dict[str, Any]) -> list[str]:
    out = [f"node/{d}" for d, r in (doc.get("node") or {}).items() if r.get("error")]
    out += [
        f"cluster/{d}/M={m}"
        for d, runs in (doc.get("cluster") or {}).items()
        for m, r in runs.items()
        if r.get("error")
    ]
    out += [f"soak/{d}" for d, r in (doc.get("soak") or {}).items() if r.get("error")]
    return out


def main(argv: list[str] | None = None) -> int:
    if os.geteuid() != 0:
        print("the benchmark mounts tmpfs volumes: run it as root", file=sys.stderr)
        return 2
    args = parse_args(argv)
    versions = read_versions()
    args.out = os.path.abspath(args.out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else ensure_cluster()
    apply_crds(versions, kubeconfig)
    doc = asyncio.run(main_async(args, versions, kubeconfig))
    failed = failures(doc)
    if failed:
        print(f"parts failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
