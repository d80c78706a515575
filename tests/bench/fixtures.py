"""Objects the benchmark creates on the apiserver: namespaces, nodes, SPCs, pods, other nodes' SPCPS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.env import NODE, csi_volume, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod
from sscsi_driver.models import NODE_LABEL, spcps_name
from sscsi_kube import ApiError, KubeClient
from sscsi_kube.resources import NAMESPACE, POD, SPC, SPCPS

MANAGED_BY = "app.kubernetes.io/managed-by"
BENCH = "sscsi-bench"
RUN_LABEL = "sscsi-bench/run"
VOLUME = "secrets"

T = TypeVar("T")


async def bounded(aws: Iterable[Awaitable[T]], limit: int = 24) -> list[T]:
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[T]) -> T:
        async with sem:
            return await aw

    return await asyncio.gather(*(one(a) for a in aws))


def objects(count: int, size: int, prefix: str = "obj") -> str:
    return objects_param(*({"objectName": f"{prefix}-{i:03d}", "objectSize": size} for i in range(count)))


def objects_param_sized(size: int, name: str = "large-secret") -> str:
    return objects_param({"objectName": name, "objectSize": size})


async def create_namespace(api: KubeClient, name: str, run_id: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {MANAGED_BY: BENCH, RUN_LABEL: run_id}},
    }
    await api.create(NAMESPACE, body)


async def create_node(api: KubeClient, name: str, run_id: str) -> None:
    """Pods bound to a node name that has no Node object are deleted by the pod GC."""
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {MANAGED_BY: BENCH, RUN_LABEL: run_id}},
    }
    with contextlib.suppress(ApiError):
        await api.create(NODE, body)


async def create_spc(api: KubeClient, namespace: str, name: str, objects_yaml: str) -> None:
    await api.create(SPC, spc_manifest(name, namespace, objects_yaml), namespace)


async def create_bench_pod(
    api: KubeClient, namespace: str, name: str, node: str, *spcs: str
) -> dict[str, Any]:
    """A pod on `node` with one CSI volume per SecretProviderClass in `spcs` ("secrets" for a single
    one, "secrets-<i>" for several)."""
    names = [VOLUME] if len(spcs) == 1 else [f"{VOLUME}-{i}" for i in range(len(spcs))]
    manifest = pod_manifest(
        name,
        namespace,
        node,
        [csi_volume(vol, spc) for vol, spc in zip(names, spcs, strict=True)],
        # nodes without a kubelet turn NotReady/unreachable: tolerate it, or taint eviction
        # deletes the pods after the default 300 s while the benchmark still uses them
        tolerations=[{"operator": "Exists"}],
    )
    manifest["metadata"]["labels"] = {MANAGED_BY: BENCH}
    return await create_pod(api, manifest)


async def create_spcps(
    api: KubeClient, pod: dict[str, Any], spc: str, node: str, target: str, n: int
) -> None:
    """What another node's driver would have written for its pod."""
    meta = pod["metadata"]
    body = {
        "apiVersion": SPCPS.api_version,
        "kind": SPCPS.kind,
        "metadata": {
            "name": spcps_name(meta["name"], meta["namespace"], spc),
            "namespace": meta["namespace"],
            "labels": {NODE_LABEL: node},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "status": {
            "podName": meta["name"],
            "secretProviderClassName": spc,
            "mounted": True,
            "targetPath": target,
            "objects": [{"id": f"secret/obj-{i:03d}", "version": "v1"} for i in range(n)],
        },
    }
    await api.create(SPCPS, body, meta["namespace"])


@dataclass(frozen=True)
class PodGroup:
    """`count` pods on one node, pod i in namespaces[i % len], each volume with its own SPC (named after
    the pod for a single volume, "<pod>-v<j>" for several). Its SPCs are created first (`create_spcs`),
    its pods when they land on the node (`create_pods`)."""

    namespaces: tuple[str, ...]
    prefix: str
    count: int
    volumes_per_pod: int = 1

    @property
    def pods(self) -> list[tuple[str, str]]:
        """(namespace, name) of each pod."""
        spread = self.namespaces
        return [(spread[i % len(spread)], f"{self.prefix}-{i:04d}") for i in range(self.count)]

    def spcs(self, pod: str) -> list[str]:
        return [pod] if self.volumes_per_pod == 1 else [f"{pod}-v{j}" for j in range(self.volumes_per_pod)]

    async def create_spcs(self, api: KubeClient, objects_yaml: str) -> None:
        spcs = [(ns, spc) for ns, name in self.pods for spc in self.spcs(name)]
        await bounded(create_spc(api, ns, spc, objects_yaml) for ns, spc in spcs)

    async def create_pods(self, api: KubeClient, node: str) -> list[dict[str, Any]]:
        pods = self.pods
        return await bounded(create_bench_pod(api, ns, name, node, *self.spcs(name)) for ns, name in pods)

    async def delete_pods(self, api: KubeClient) -> None:
        """Gone from the node (terminating: without a kubelet they keep their deletionTimestamp)."""
        await bounded(api.delete(POD, name, ns, missing_ok=True) for ns, name in self.pods)


async def delete_namespaces(api: KubeClient, names: Iterable[str], wait: float = 0.0) -> float:
    """Delete, optionally wait until gone; returns the seconds waited."""
    names = list(names)
    for name in names:
        with contextlib.suppress(ApiError):
            await api.delete(NAMESPACE, name)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while wait and names and loop.time() - started < wait:
        left = []
        for name in names:
            try:
                await api.get(NAMESPACE, name)
                left.append(name)
            except ApiError as err:
                if not err.not_found:
                    left.append(name)
        names = left
        if names:
            await asyncio.sleep(0.5)
    return loop.time() - started


async def delete_nodes(api: KubeClient, names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(ApiError):
            await api.delete(NODE, name)


async def count_pods(api: KubeClient, namespace: str) -> int:
    doc = await api.list(POD, namespace)
    return len(doc.get("items") or [])
