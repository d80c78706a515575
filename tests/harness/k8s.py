"""Small helpers over the apiserver for tests, the demo and the benchmark."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sscsi_kube import ApiError, KubeClient
from sscsi_kube.resources import EVENT, POD


async def create_pod(api: KubeClient, manifest: dict[str, Any]) -> dict[str, Any]:
    ns = manifest["metadata"]["namespace"]
    for _ in range(100):  # the namespace's default ServiceAccount appears shortly after the namespace
        try:
            return await api.create(POD, manifest, ns)
        except ApiError as err:
            if "serviceaccount" not in err.message.lower():
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("default service account never appeared")


async def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.25) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def read_volume(target: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in target.iterdir() if not p.name.startswith("..")}


async def events_for(api: KubeClient, namespace: str, pod: str) -> list[dict[str, Any]]:
    doc = await api.list(EVENT, namespace, fields={"involvedObject.name": pod})
    return list(doc.get("items") or [])
