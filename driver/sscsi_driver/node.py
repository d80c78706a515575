"""CSI Node service: kubelet's entry points, thin over the Publisher."""

from __future__ import annotations

from typing import Any

import grpc
from sscsi_proto import csi_pb2, csi_pb2_grpc

from . import errors
from .keyed_lock import KeyedLock
from .publisher import Publisher, PublishRequest
from .rpc import rpc

_VOLUME_ID = ("volume_id", "Volume ID missing in request")
_TARGET = ("target_path", "Target path missing in request")
_STAGING = ("staging_target_path", "Target path missing in request")
_CAPABILITY = ("volume_capability", "Volume capability missing in request")
_CONTEXT = ("volume_context", "Volume attributes missing in request")

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_GROUP_ID = 2**32 - 2  # (gid_t)-1 means "no change" to chown(2), never a group


def mount_group(request: csi_pb2.NodePublishVolumeRequest) -> int | None:
    """The group kubelet asks the volume to be owned by (the pod's fsGroup), or None without one.

    Kubelet sends it only because NodeGetCapabilities advertises VOLUME_MOUNT_GROUP, as a decimal.
    """
    capability = request.volume_capability
    raw = capability.mount.volume_mount_group if capability.HasField("mount") else ""
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_GROUP_ID:
        shown = raw if len(raw) <= 32 else raw[:32] + "..."
        raise errors.invalid_argument(
            f"volume_mount_group {shown!r} is not a valid group ID: expected a decimal integer "
            f"0..{MAX_GROUP_ID} (the pod's securityContext.fsGroup)"
        )
    return int(raw)


class NodeService(csi_pb2_grpc.NodeServicer):
    def __init__(self, node_id: str, publisher: Publisher) -> None:
        self._node_id = node_id
        self._publisher = publisher
        self.volume_locks: KeyedLock[str] = KeyedLock()  # one operation per target path

    @rpc(_CAPABILITY, _VOLUME_ID, _TARGET, _CONTEXT, lock_on="target_path")
    async def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: Ctx
    ) -> csi_pb2.NodePublishVolumeResponse:
        remaining = context.time_remaining()
        group = mount_group(request)
        await self._publisher.publish(
            PublishRequest(
                target_path=request.target_path,
                readonly=request.readonly,
                volume_context=dict(request.volume_context),
                secrets=dict(request.secrets),
                deadline=remaining - 1.0 if remaining is not None and remaining > 2.0 else None,
                mount_group=group,
            )
        )
        return csi_pb2.NodePublishVolumeResponse()

    @rpc(_VOLUME_ID, _TARGET, lock_on="target_path")
    async def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: Ctx
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        await self._publisher.unpublish(request.target_path)
        return csi_pb2.NodeUnpublishVolumeResponse()

    # Staging exists for the capability upstream advertises; inline volumes never stage.
    @rpc(_VOLUME_ID, _STAGING, _CAPABILITY)
    async def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: Ctx
    ) -> csi_pb2.NodeStageVolumeResponse:
        return csi_pb2.NodeStageVolumeResponse()

    @rpc(_VOLUME_ID, _STAGING)
    async def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: Ctx
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        return csi_pb2.NodeUnstageVolumeResponse()

    @rpc()
    async def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: Ctx
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "")

    @rpc()
    async def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, context: Ctx
    ) -> csi_pb2.NodeExpandVolumeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "NodeExpandVolume is not implemented")

    @rpc()
    async def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: Ctx
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        rpc_type = csi_pb2.NodeServiceCapability.RPC
        # VOLUME_MOUNT_GROUP: kubelet passes the pod's fsGroup in NodePublishVolume and leaves
        # ownership to the driver (it never chowns these volumes itself).
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.NodeServiceCapability(rpc=rpc_type(type=kind))
                for kind in (rpc_type.STAGE_UNSTAGE_VOLUME, rpc_type.VOLUME_MOUNT_GROUP)
            ]
        )

    @rpc()
    async def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: Ctx
    ) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self._node_id)
