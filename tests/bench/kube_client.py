"""The Kubernetes layer's client next to lightkube's own AsyncClient (README "Choices worth knowing").

    PYTHONPATH=tests .venv/bin/python -m bench.kube_client

Both talk to the same in-process mock apiserver (httpx2's MockTransport, so apiserver time is left
out) through the same lightkube-configured HTTP client: GETs of a 2 KiB SecretProviderClass and
lists of 300 of them, best of 3 rounds, then the process's peak RSS. Run each side in a fresh
process (the default does) so the RSS figures do not mix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.config.client_adapter import AsyncClient as configured_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.generic_resource import create_namespaced_resource
from sscsi_kube import KubeClient
from sscsi_kube.resources import SPC

GETS = 4000
LIST_SIZE = 300
SPC_OBJ: dict[str, Any] = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {
        "name": "spc",
        "namespace": "ns",
        "resourceVersion": "12",
        "uid": "u" * 36,
        "labels": {f"l{i}": "v" for i in range(5)},
    },
    "spec": {"provider": "e2e", "parameters": {f"p{i}": "x" * 40 for i in range(20)}},
}
CONFIG = {
    "clusters": [{"name": "c", "cluster": {"server": "https://k8s"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
    "current-context": "x",
}


def _transport() -> httpx2.MockTransport:
    one = json.dumps(SPC_OBJ).encode()
    many = json.dumps({"kind": "List", "metadata": {"resourceVersion": "99"}, "items": [SPC_OBJ] * LIST_SIZE})

    def serve(request: httpx2.Request) -> httpx2.Response:
        body = many.encode() if request.url.path.endswith("secretproviderclasses") else one
        return httpx2.Response(200, content=body, headers={"Content-Type": "application/json"})

    return httpx2.MockTransport(serve)


async def _ours(n: int) -> tuple[float, float]:
    config = KubeConfig.from_dict(CONFIG).get()
    assert config is not None
    client = KubeClient(configured_client(config, ConnectionParams(transport=_transport())))
    start = time.perf_counter()
    for _ in range(n):
        await client.get(SPC, "spc", "ns")
    gets = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n // 20):
        await client.list(SPC, "ns")
    return gets / n, (time.perf_counter() - start) / (n // 20)


async def _lightkube(n: int) -> tuple[float, float]:
    generic = create_namespaced_resource(SPC.group, SPC.version, SPC.kind, SPC.plural)
    client = AsyncClient(config=KubeConfig.from_dict(CONFIG).get(), transport=_transport())
    start = time.perf_counter()
    for _ in range(n):
        await client.get(generic, "spc", namespace="ns")
    gets = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n // 20):
        [item async for item in client.list(generic, namespace="ns")]
    return gets / n, (time.perf_counter() - start) / (n // 20)


def measure(side: str) -> dict[str, float]:
    run = _ours if side == "ours" else _lightkube
    asyncio.run(run(200))  # warm up
    rounds = [asyncio.run(run(GETS)) for _ in range(3)]
    return {
        "get_us": min(r[0] for r in rounds) * 1e6,
        "list_ms": min(r[1] for r in rounds) * 1e3,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("ours", "lightkube"), help="measure one side in this process")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side)))
        return
    print(f"{'client':<12}{'GET µs':>10}{f'list({LIST_SIZE}) ms':>16}{'peak RSS MiB':>15}")
    for side in ("ours", "lightkube"):
        out = subprocess.run(
            [sys.executable, "-m", "bench.kube_client", "--side", side],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout)
        print(f"{side:<12}{row['get_us']:>10.1f}{row['list_ms']:>16.2f}{row['peak_rss_mib']:>15.1f}")


if __name__ == "__main__":
    main()
