"""Kubelet-shaped load for the benchmark: many NodePublishVolume calls at once, each timed.

Requests are built exactly as `KubeletEmulator` builds them (same target layout, volume id,
volume context and capability), but ahead of time, so a measurement covers the driver's
gRPC call and nothing else (no CSIDriver/Secret reads by the emulator inside the timing).
Works against any CSI node plugin on a unix socket: ours or the upstream Go driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from sscsi_proto import csi_pb2, csi_pb2_grpc

from .kubelet import DRIVER, KubeletEmulator


@dataclass(frozen=True)
class PreparedVolume:
    pod: str  # namespace/name
    volume: str
    target: Path
    publish: csi_pb2.NodePublishVolumeRequest
    unpublish: csi_pb2.NodeUnpublishVolumeRequest


@dataclass(frozen=True)
class CallResult:
    volume: PreparedVolume
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Batch:
    """One burst of calls issued together: per-call latencies and the wall time of the burst."""

    results: tuple[CallResult, ...]
    wall_seconds: float

    @property
    def latencies(self) -> list[float]:
        return [r.seconds for r in self.results if r.ok]

    @property
    def errors(self) -> list[str]:
        return [f"{r.volume.pod}/{r.volume.volume}: {r.error}" for r in self.results if not r.ok]


def target_path(root_dir: Path, pod_uid: str, volume: str) -> Path:
    return root_dir / "pods" / pod_uid / "volumes" / "kubernetes.io~csi" / volume / "mount"


def prepare(pod: dict[str, Any], root_dir: Path, driver_name: str = DRIVER) -> list[PreparedVolume]:
    """The NodePublish/NodeUnpublish requests kubelet would send for the pod's CSI volumes."""
    meta, spec = pod["metadata"], pod["spec"]
    out: list[PreparedVolume] = []
    for vol in spec.get("volumes") or []:
        csi = vol.get("csi") or {}
        if csi.get("driver") != driver_name:
            continue
        target = target_path(root_dir, meta["uid"], vol["name"])
        ctx = dict(csi.get("volumeAttributes") or {})
        ctx.update(
            {
                "csi.storage.k8s.io/pod.name": meta["name"],
                "csi.storage.k8s.io/pod.namespace": meta["namespace"],
                "csi.storage.k8s.io/pod.uid": meta["uid"],
                "csi.storage.k8s.io/serviceAccount.name": spec.get("serviceAccountName") or "default",
                "csi.storage.k8s.io/ephemeral": "true",
            }
        )
        volume_id = KubeletEmulator.volume_id(meta["uid"], vol["name"])
        publish = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            target_path=str(target),
            volume_capability=csi_pb2.VolumeCapability(
                mount=csi_pb2.VolumeCapability.MountVolume(fs_type=csi.get("fsType", "")),
                access_mode=csi_pb2.VolumeCapability.AccessMode(
                    mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
                ),
            ),
            readonly=bool(csi.get("readOnly", False)),
            volume_context=ctx,
        )
        unpublish = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        out.append(
            PreparedVolume(f"{meta['namespace']}/{meta['name']}", vol["name"], target, publish, unpublish)
        )
    return out


class LoadGenerator:
    """Issues prepared calls to one CSI socket; every call in a burst starts at once, as kubelet's
    per-volume goroutines do at node start (no client-side concurrency limit unless asked)."""

    def __init__(self, socket: str | Path, timeout: float = 120.0) -> None:
        self._channel = grpc.aio.insecure_channel(f"unix:{socket}")
        self._node = csi_pb2_grpc.NodeStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._channel.channel_ready(), timeout)

    async def _timed(
        self, vol: PreparedVolume, call: Any, request: Any, sem: asyncio.Semaphore | None
    ) -> CallResult:
        async def go() -> CallResult:
            started = time.perf_counter()
            try:
                await call(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as err:
                return CallResult(vol, time.perf_counter() - started, f"{err.code().name}: {err.details()}")
            return CallResult(vol, time.perf_counter() - started)

        if sem is None:
            return await go()
        async with sem:
            return await go()

    async def _burst(
        self, calls: Iterable[tuple[PreparedVolume, Any, Any]], concurrency: int | None
    ) -> Batch:
        sem = asyncio.Semaphore(concurrency) if concurrency else None
        started = time.perf_counter()
        results = await asyncio.gather(*(self._timed(v, c, r, sem) for v, c, r in calls))
        return Batch(tuple(results), time.perf_counter() - started)

    async def publish(self, volumes: Sequence[PreparedVolume], concurrency: int | None = None) -> Batch:
        for vol in volumes:  # kubelet creates the volume directory (not `mount`) before calling
            vol.target.parent.mkdir(parents=True, exist_ok=True)
        return await self._burst(((v, self._node.NodePublishVolume, v.publish) for v in volumes), concurrency)

    async def republish(self, volumes: Sequence[PreparedVolume], concurrency: int | None = None) -> Batch:
        """kubelet's periodic NodePublishVolume for CSIDrivers with requiresRepublish: true."""
        return await self._burst(((v, self._node.NodePublishVolume, v.publish) for v in volumes), concurrency)

    async def unpublish(self, volumes: Sequence[PreparedVolume], concurrency: int | None = None) -> Batch:
        batch = await self._burst(
            ((v, self._node.NodeUnpublishVolume, v.unpublish) for v in volumes), concurrency
        )
        for result in batch.results:  # kubelet then removes the (now empty) volume directory
            parent = result.volume.target.parent
            if result.ok and parent.exists():
                with contextlib.suppress(OSError):
                    os.rmdir(parent)
        return batch
