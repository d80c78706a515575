"""Where our driver's memory goes: import cost per layer, and a live process's mappings.

    PYTHONPATH=tests:hack .venv/bin/python -m bench.memory [--kubeconfig PATH]

1. *imports*: one fresh interpreter imports the driver's dependencies layer by layer (the runtime and
   TLS, grpcio, protobuf, prometheus-client, our generated protos, sscsi_kube with its HTTP/1.1
   transport and kubeconfig reader, the driver, the YAML parser a kubeconfig file needs) and reports
   VmRSS after each, after a gc pass. A layer's figure is what it adds on top of the layers before it.
2. *live*: the driver started as the bench starts it (no volumes), after `--settle` seconds:
   /proc/<pid>/smaps grouped by mapping (malloc heap, anonymous mappings: pymalloc arenas, thread
   stacks and grpc's allocations; each shared library's resident pages) and smaps_rollup's totals.
Per-volume cost is the bench's: (idle RSS with 110 volumes - fresh RSS) / 110.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

IMPORT_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("asyncio+ssl", ("asyncio", "ssl")),
    ("grpcio", ("grpc", "grpc.aio")),
    (
        "protobuf",
        ("google.protobuf.message", "google.protobuf.descriptor_pool", "google.protobuf.wrappers_pb2"),
    ),
    ("prometheus-client", ("prometheus_client", "prometheus_client.exposition")),
    ("sscsi_proto", ("sscsi_proto.csi_pb2_grpc", "sscsi_proto.provider_pb2_grpc")),
    ("sscsi_kube (HTTP/1.1 transport, kubeconfig reader)", ("sscsi_kube",)),
    ("sscsi_driver", ("sscsi_driver.main",)),
    ("yaml (a kubeconfig file in YAML; none in-cluster)", ("yaml",)),
]

_STEPS = """
import gc, json, sys
def rss():
    gc.collect()
    with open("/proc/self/status") as f:
        return int(next(l.split()[1] for l in f if l.startswith("VmRSS:"))) / 1024
out = [["interpreter", rss(), 0]]
for name, modules in json.loads(sys.argv[1]):
    before = len(sys.modules)
    for module in modules:
        __import__(module)
    out.append([name, rss(), len(sys.modules) - before])
print(json.dumps(out))
"""


def import_steps(python: str) -> list[dict[str, Any]]:
    """[{layer, rss_mib (after it), added_mib, modules (new in sys.modules)}] in import order."""
    raw = subprocess.run(
        [python, "-c", _STEPS, json.dumps(IMPORT_LAYERS)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows: list[dict[str, Any]] = []
    previous = 0.0
    for name, rss, modules in json.loads(raw.stdout):
        rows.append(
            {
                "layer": name,
                "rss_mib": round(rss, 1),
                "added_mib": round(rss - previous, 1),
                "modules": modules,
            }
        )
        previous = rss
    return rows


def _group(path: str) -> str:
    if not path:
        return "anonymous (pymalloc arenas, thread stacks, grpc)"
    if path == "[heap]":
        return "malloc heap"
    if path.startswith("["):
        return path
    base = os.path.basename(path)
    for key, label in (
        ("cygrpc", "grpcio (cygrpc.so)"),
        ("libpython", "libpython"),
        ("libcrypto", "libcrypto+libssl"),
        ("libssl", "libcrypto+libssl"),
        ("_message", "protobuf (upb)"),
    ):
        if key in base:
            return label
    return "other files" if ".so" not in base else "other shared libraries"


def mappings(pid: int) -> dict[str, dict[str, float]]:
    """Resident MiB per mapping group, and how much of it is anonymous (private, written)."""
    rss: collections.Counter[str] = collections.Counter()
    anon: collections.Counter[str] = collections.Counter()
    group = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                group = _group(parts[5] if len(parts) > 5 else "")
            elif parts[0] == "Rss:":
                rss[group] += int(parts[1])
            elif parts[0] == "Anonymous:":
                anon[group] += int(parts[1])
    return {
        g: {"rss_mib": round(v / 1024, 1), "anon_mib": round(anon[g] / 1024, 1)} for g, v in rss.most_common()
    }


def rollup(pid: int) -> dict[str, float]:
    keys = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty")
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                out[f"{key}_mib"] = round(int(rest.split()[0]) / 1024, 1)
    return out


def live(kubeconfig: Path, settle: float) -> dict[str, Any]:
    """Our driver, started as the bench starts it, with no volume: its mappings after `settle` s."""
    from . import drivers

    spec = drivers.ours_spec()
    with tempfile.TemporaryDirectory(prefix="sscsi-memory-") as tmp:
        root = Path(tmp)
        (root / "providers").mkdir()
        drv = drivers.start(
            spec,
            node="memory-probe",
            socket=root / "csi.sock",
            kubeconfig=kubeconfig,
            provider_dir=root / "providers",
            kubelet_root=root / "kubelet",
            metrics_port=18095,
            rotation_interval="2m",
            log_path=root / "driver.log",
        )
        try:
            time.sleep(settle)
            return {"rollup": rollup(drv.pid), "mappings": mappings(drv.pid)}
        finally:
            drv.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", type=Path, default=Path("/tmp/sscsi-cluster/admin.kubeconfig"))
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report: dict[str, Any] = {"imports": import_steps(sys.executable)}
    if args.kubeconfig.exists():
        report["live"] = live(args.kubeconfig, args.settle)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("imports (fresh interpreter, VmRSS after each layer)")
    for row in report["imports"]:
        print(
            f"  {row['layer']:58s} {row['rss_mib']:6.1f} +{row['added_mib']:5.1f} ({row['modules']} modules)"
        )
    if "live" in report:
        print(
            "live driver, no volumes: " + ", ".join(f"{k} {v}" for k, v in report["live"]["rollup"].items())
        )
        for name, row in report["live"]["mappings"].items():
            print(f"  {name:58s} {row['rss_mib']:6.1f}  (anon {row['anon_mib']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
