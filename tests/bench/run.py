"""Benchmark entry point: our driver and the upstream Go driver, side by side, in one run.

    make bench                                    # 3 rounds, ABAB (< 20 min on 2 cores)
    PYTHONPATH=tests:hack .venv/bin/python -m bench   # the same, by hand
    python -m bench --smoke                       # seconds; run by tests/e2e/test_bench_smoke.py

Needs root (tmpfs mounts), the local control plane (started with hack/cluster-up.sh when not
running) and, for the comparison, the upstream binary (`hack/build-tools.sh upstream-driver`);
without it only our driver is measured and the ratios are empty.
Writes <out>/bench-<mode>-<timestamp>.json (+ .png) and latest-<mode>.json/.png beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sscsi_kube import KubeClient
from versions_env import versions as read_versions

from . import chart, drivers, leftovers, report, stats
from .audit import AuditLog
from .rounds import floors_doc, probes, run_rounds
from .settings import Settings, Shared

REPO = Path(__file__).resolve().parents[2]


def cluster_dir() -> Path:
    return Path(os.path.realpath(os.environ.get("SSCSI_CLUSTER_DIR") or "/tmp/sscsi-cluster"))


def ensure_cluster() -> Path:
    """hack/cluster-up.sh is idempotent: a no-op when the control plane already runs."""
    env = dict(os.environ, SSCSI_CLUSTER_DIR=str(cluster_dir()))
    out = subprocess.run([str(REPO / "hack" / "cluster-up.sh")], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"hack/cluster-up.sh failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return cluster_dir() / "admin.kubeconfig"


def apply_crds(versions: dict[str, str], kubeconfig: Path) -> None:
    """Both drivers need the SecretProviderClass(PodStatus) CRDs; ours are upstream-compatible."""
    kubectl = Path(versions["TOOLS_CACHE"]) / f"kube-{versions['KUBE_VERSION']}" / "bin" / "kubectl"
    crds = REPO / "assets" / "crds"
    for args in (
        ["apply", "--server-side", "-f", str(crds)],
        ["wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds)],
    ):
        res = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise SystemExit(f"kubectl {args[0]} {crds} failed: {res.stderr}")


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment(versions: dict[str, str], specs: dict[str, drivers.DriverSpec]) -> dict[str, Any]:
    import grpc

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem_total = 0
    up = specs.get(drivers.UPSTREAM)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "go": _cmd(["go", "version"]),
        "kubernetes": versions.get("KUBE_VERSION"),
        "ours_version": specs[drivers.OURS].version,
        "upstream_version": drivers.binary_version(up) if up and up.available else None,
        "upstream_module": f"sigs.k8s.io/secrets-store-csi-driver@{versions.get('UPSTREAM_DRIVER_VERSION')}",
        "upstream_build": "hack/build-tools.sh upstream-driver: wrapper module, CGO off, "
        "monis.app/mlog (not on the module proxy) replaced by a klog shim",
        "upstream_binary": str(up.binary) if up else None,
        "hostname": platform.node(),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> str:
    """Other work on the machine skews every timing: recorded at the start and the end."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


async def main_async(args: argparse.Namespace, versions: dict[str, str], kubeconfig: Path) -> dict[str, Any]:
    settings = Settings.smoke() if args.smoke else Settings.full()
    started_wall, started = time.time(), time.monotonic()
    out_dir = Path(args.out)  # made absolute by main()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = secrets.token_hex(3)
    logs_dir = out_dir / "logs" / f"{settings.mode}-{stamp}"

    selection = drivers.select(args.drivers, versions)
    specs, order, skipped = selection.specs, selection.order, selection.skipped

    def progress(message: str) -> None:
        print(f"{time.monotonic() - started:7.1f}s {message}", flush=True)

    api = KubeClient.from_config(str(kubeconfig), "sscsi-bench/loadgen", timeout=30.0)
    workroot = Path(tempfile.mkdtemp(prefix=f"sscsi-bench-{run_id}-"))
    shared = Shared(
        api=api,
        audit=AuditLog(cluster_dir() / "logs" / "audit.log"),
        kubeconfig=kubeconfig,
        run_id=run_id,
        workroot=workroot,
        logs_dir=logs_dir,
        settings=settings,
        progress=progress,
        py_spy_dir=Path(args.py_spy) if args.py_spy else None,
    )
    doc: dict[str, Any] = {
        "schema": 2,
        "mode": settings.mode,
        "repeats": args.repeats,
        "started_at": datetime.fromtimestamp(started_wall, UTC).isoformat(),
        "run_id": run_id,
        "environment": environment(versions, specs),
        "config": {
            "publish_sizes": list(settings.publish_sizes),
            "objects_per_volume": settings.objects_per_volume,
            "object_size_bytes": settings.object_size,
            "namespaces_per_driver": settings.namespaces_per_driver,
            "spc_per_pod": True,
            "rotation_poll_interval_s": settings.rotation_interval_s,
            "idle_window_s": settings.idle_window_s,
            "large_secret_bytes": settings.large_secret_bytes if settings.large else None,
            "many_files": settings.many_files if settings.large else None,
            "scale_factor": settings.scale_factor,
            "drivers": order,
            "repeats": args.repeats,
            "interleaving": "each round runs every driver in this order: " + ", ".join(order),
            "skipped": skipped,
            "audit_log": str(shared.audit.path),
            "audit_attribution": {
                drivers.OURS: "user agent secrets-store-csi-py/driver/* and the URI names the bench "
                "node or one of its namespaces",
                drivers.UPSTREAM: "user agent csi-secrets-store/*",
            },
        },
    }
    try:
        await leftovers.before_run(
            api, args.leftovers_minutes, 120.0 if settings.mode == "full" else 0.0, progress
        )
        rounds, elsewhere = await run_rounds(shared, specs, order, args)
    finally:
        await leftovers.after_run(api, run_id, progress)
        await api.close()
        shutil.rmtree(workroot, ignore_errors=True)
    if elsewhere:
        doc["elsewhere"] = {k: v for k, v in elsewhere.items() if k not in ("nodes", "namespaces")}
    doc["runs"] = rounds
    doc["floors"] = floors_doc(rounds, args.floors)
    measured = probes(doc["floors"])
    per_run = [r["drivers"] for r in rounds]
    rows = report.figure_rows(
        settings.publish_sizes, settings.large, bool(elsewhere), settings.namespaces_per_driver
    )
    doc["figures"] = report.figures(per_run, rows, measured)
    doc["median"] = {name: stats.median_view([r.get(name) for r in per_run]) for name in order}
    doc["goals"] = report.goals(doc["median"], settings.steady_pods, bool(elsewhere), doc["figures"])
    doc["duration_s"] = round(time.monotonic() - started, 1)
    doc["environment"]["loadavg_end"] = _loadavg()
    base = out_dir / f"bench-{settings.mode}-{stamp}"
    json_path, png_path = base.with_suffix(".json"), base.with_suffix(".png")
    doc["artifacts"] = {"json": str(json_path), "png": str(png_path), "logs": str(logs_dir)}
    try:
        chart_error = None if args.no_chart else chart.chart(doc, png_path)
    except Exception as err:  # the PNG is a view of the JSON: never lose the run's figures to it
        chart_error = f"chart failed: {err!r}"
    if chart_error or args.no_chart:
        doc["artifacts"]["png"] = None
        doc["artifacts"]["png_skipped"] = chart_error or "--no-chart"
    json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    for src in (json_path, png_path):
        if src.exists():
            shutil.copyfile(src, out_dir / f"latest-{settings.mode}{src.suffix}")
    print()
    print(report.table(doc["figures"], doc["goals"], args.repeats, measured))
    print()
    print(f"JSON: {json_path}")
    print(f"PNG:  {doc['artifacts']['png'] or doc['artifacts'].get('png_skipped')}")
    print(f"logs: {logs_dir}")
    minutes, seconds = divmod(int(doc["duration_s"]), 60)
    print(f"wall time {minutes}m{seconds:02d}s ({args.repeats} run(s) per driver)")
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="N=2, publish + passes only (seconds, for make test)")
    p.add_argument(
        "--out", default=str(REPO / "bench-results"), help="results directory (default: %(default)s)"
    )
    p.add_argument(
        "--drivers", default="ours,upstream", help="comma list, run in this order (default: %(default)s)"
    )
    p.add_argument("--kubeconfig", default=None, help="use this cluster instead of hack/cluster-up.sh's")
    p.add_argument("--no-scale", action="store_true", help="skip scenario 4")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds of every driver, interleaved ours, upstream, ours, ... (default: 3; --smoke: 1)",
    )
    p.add_argument(
        "--no-floors", dest="floors", action="store_false", default=None, help="skip the RSS floor probes"
    )
    leftovers.add_age_option(p)
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        help="profile our driver with py-spy into DIR (folded stacks; it skews the figures)",
    )
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 3
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.floors is None:  # the probes take seconds: measured in full runs, skipped by --smoke
        args.floors = not args.smoke
    return args


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
    failed = [
        f"round {r['round']} {d}/{ph}"
        for r in doc["runs"]
        for d, phases in r["drivers"].items()
        for ph, x in phases.items()
        if x.get("error")
    ]
    if failed:
        print(f"phases failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
