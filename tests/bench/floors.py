"""RSS floors: what a Python process costs before our code does anything.

Each floor is a fresh interpreter (the one the driver runs on) that imports one set of modules, runs a
full collection and reports its VmRSS. The bench measures them in the same run as the drivers, so a
row where upstream's Go binary is lighter can say how far above the floor of the runtime we are.
"""

from __future__ import annotations

import statistics
import subprocess

# name -> modules imported (the driver's own start-up imports last: everything `main` pulls in)
FLOOR_IMPORTS: dict[str, tuple[str, ...]] = {
    "interpreter": (),
    "asyncio": ("asyncio",),
    "grpcio": ("grpc", "grpc.aio"),
    "grpcio+protobuf": ("grpc", "grpc.aio", "google.protobuf.message", "google.protobuf.descriptor_pool"),
    "http-client": ("sscsi_kube.client",),
    "prometheus-client": ("prometheus_client",),
    "driver-imports": ("sscsi_driver.main",),
}

_PROBE = """
import gc, sys
for name in sys.argv[1:]:
    __import__(name)
gc.collect()
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmRSS:")))
"""


def rss_of_imports(python: str, modules: tuple[str, ...], timeout: float = 60.0) -> float:
    """VmRSS (MiB) of a fresh `python` after importing `modules` and a gc pass."""
    out = subprocess.run(
        [python, "-c", _PROBE, *modules], capture_output=True, text=True, timeout=timeout, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def rss_floors(python: str, repeats: int = 3) -> dict[str, float]:
    """MiB per import set (the median of `repeats` fresh processes each), keys as FLOOR_IMPORTS."""
    return {
        name: round(statistics.median(rss_of_imports(python, modules) for _ in range(repeats)), 1)
        for name, modules in FLOOR_IMPORTS.items()
    }


if __name__ == "__main__":  # pragma: no cover - manual use
    import json
    import sys

    print(json.dumps(rss_floors(sys.argv[1] if len(sys.argv) > 1 else sys.executable), indent=2))
