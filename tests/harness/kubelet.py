"""Calls the CSI driver exactly as kubelet does for ephemeral inline volumes.

Kubelet facts this mirrors: target path `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`,
volume id `csi-<sha256>`, volume context = the volume's `volumeAttributes` plus pod info
(podInfoOnMount) and `csi.storage.k8s.io/ephemeral=true`, `secrets` from nodePublishSecretRef,
readonly from the volume source, a mount capability, and tokens for CSIDriver.tokenRequests.
When the driver advertises VOLUME_MOUNT_GROUP, the pod's fsGroup goes in the mount capability's
volume_mount_group (kubelet 1.34 does so whatever the CSIDriver's fsGroupPolicy, and then never
changes ownership itself).
On failure kubelet posts a `FailedMount` Warning event on the pod; we do the same so
tests can assert what users would see in `kubectl describe pod`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from sscsi_kube import KubeClient, Resource
from sscsi_kube.resources import EVENT, POD, SECRET
from sscsi_proto import csi_pb2, csi_pb2_grpc

DRIVER = "secrets-store.csi.k8s.io"
CSIDRIVER = Resource("storage.k8s.io", "v1", "csidrivers", "CSIDriver", namespaced=False)
TOKEN_REQUEST = Resource("", "v1", "serviceaccounts", "ServiceAccount")


@dataclass
class VolumeResult:
    volume: str
    target: Path
    error: grpc.aio.AioRpcError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class KubeletEmulator:
    socket: str
    root_dir: Path
    node_name: str
    api: KubeClient
    driver_name: str = DRIVER
    published: dict[str, list[Path]] = field(default_factory=dict)  # pod uid -> targets

    def __post_init__(self) -> None:
        self._channel = grpc.aio.insecure_channel(f"unix:{self.socket}")
        self.node = csi_pb2_grpc.NodeStub(self._channel)
        self.identity = csi_pb2_grpc.IdentityStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    def target_path(self, pod_uid: str, volume: str) -> Path:
        return self.root_dir / "pods" / pod_uid / "volumes" / "kubernetes.io~csi" / volume / "mount"

    @staticmethod
    def volume_id(pod_uid: str, volume: str) -> str:
        return "csi-" + hashlib.sha256(f"{pod_uid}{volume}".encode()).hexdigest()

    def csi_volumes(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            v
            for v in pod["spec"].get("volumes") or []
            if (v.get("csi") or {}).get("driver") == self.driver_name
        ]

    async def _tokens(self, pod: dict[str, Any]) -> str | None:
        try:
            csidriver = await self.api.get(CSIDRIVER, self.driver_name)
        except Exception:
            return None
        requests = (csidriver.get("spec") or {}).get("tokenRequests") or []
        if not requests:
            return None
        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        tokens: dict[str, dict[str, str]] = {}
        for req in requests:
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [req["audience"]],
                    "expirationSeconds": req.get("expirationSeconds") or 3600,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            path = TOKEN_REQUEST.path(meta["namespace"], sa, "token")
            resp = await self.api.request("POST", path, body=body)
            tokens[req["audience"]] = {
                "token": resp["status"]["token"],
                "expirationTimestamp": resp["status"]["expirationTimestamp"],
            }
        return json.dumps(tokens)

    async def _secrets(self, namespace: str, csi: dict[str, Any]) -> dict[str, str]:
        ref = csi.get("nodePublishSecretRef")
        if not ref:
            return {}
        secret = await self.api.get(SECRET, ref["name"], namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    async def _mount_group(self, pod: dict[str, Any]) -> str:
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        if fs_group is None:
            return ""
        reply = await self.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), timeout=10)
        wanted = csi_pb2.NodeServiceCapability.RPC.VOLUME_MOUNT_GROUP
        return str(fs_group) if any(cap.rpc.type == wanted for cap in reply.capabilities) else ""

    async def publish_pod(self, pod: dict[str, Any], *, post_events: bool = True) -> list[VolumeResult]:
        meta = pod["metadata"]
        results: list[VolumeResult] = []
        tokens = await self._tokens(pod)
        mount_group = await self._mount_group(pod)
        for vol in self.csi_volumes(pod):
            csi = vol["csi"]
            target = self.target_path(meta["uid"], vol["name"])
            # kubelet creates the volume dir (not `mount`) before calling the driver
            target.parent.mkdir(parents=True, exist_ok=True)
            ctx = dict(csi.get("volumeAttributes") or {})
            ctx.update(
                {
                    "csi.storage.k8s.io/pod.name": meta["name"],
                    "csi.storage.k8s.io/pod.namespace": meta["namespace"],
                    "csi.storage.k8s.io/pod.uid": meta["uid"],
                    "csi.storage.k8s.io/serviceAccount.name": pod["spec"].get("serviceAccountName")
                    or "default",
                    "csi.storage.k8s.io/ephemeral": "true",
                }
            )
            if tokens:
                ctx["csi.storage.k8s.io/serviceAccount.tokens"] = tokens
            request = csi_pb2.NodePublishVolumeRequest(
                volume_id=self.volume_id(meta["uid"], vol["name"]),
                target_path=str(target),
                volume_capability=csi_pb2.VolumeCapability(
                    mount=csi_pb2.VolumeCapability.MountVolume(
                        fs_type=csi.get("fsType", ""), volume_mount_group=mount_group
                    ),
                    access_mode=csi_pb2.VolumeCapability.AccessMode(
                        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
                    ),
                ),
                readonly=bool(csi.get("readOnly", False)),
                secrets=await self._secrets(meta["namespace"], csi),
                volume_context=ctx,
            )
            try:
                await self.node.NodePublishVolume(request, timeout=120)
                self.published.setdefault(meta["uid"], [])
                if target not in self.published[meta["uid"]]:
                    self.published[meta["uid"]].append(target)
                results.append(VolumeResult(vol["name"], target))
            except grpc.aio.AioRpcError as err:
                results.append(VolumeResult(vol["name"], target, err))
                if post_events:
                    await self._failed_mount_event(pod, vol["name"], err)
        return results

    async def unpublish_pod(self, pod: dict[str, Any]) -> list[VolumeResult]:
        meta = pod["metadata"]
        results: list[VolumeResult] = []
        for vol in self.csi_volumes(pod):
            target = self.target_path(meta["uid"], vol["name"])
            try:
                await self.node.NodeUnpublishVolume(
                    csi_pb2.NodeUnpublishVolumeRequest(
                        volume_id=self.volume_id(meta["uid"], vol["name"]), target_path=str(target)
                    ),
                    timeout=60,
                )
                results.append(VolumeResult(vol["name"], target))
                # kubelet then removes the (now empty) volume directory
                if target.parent.exists():
                    os.rmdir(target.parent)
            except grpc.aio.AioRpcError as err:
                results.append(VolumeResult(vol["name"], target, err))
        self.published.pop(meta["uid"], None)
        return results

    async def republish_pod(self, pod: dict[str, Any]) -> list[VolumeResult]:
        """What kubelet does periodically when the CSIDriver has requiresRepublish: true."""
        return await self.publish_pod(pod, post_events=False)

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.api.get(POD, name, namespace)

    async def _failed_mount_event(self, pod: dict[str, Any], volume: str, err: grpc.aio.AioRpcError) -> None:
        meta = pod["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        code = "".join(p.title() for p in err.code().name.split("_"))
        detail = f"rpc error: code = {code} desc = {err.details()}"
        message = f'MountVolume.SetUp failed for volume "{volume}" : {detail}'
        await self.api.create(
            EVENT,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "reason": "FailedMount",
                "message": message,
                "type": "Warning",
                "source": {"component": "kubelet", "host": self.node_name},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
            meta["namespace"],
        )
