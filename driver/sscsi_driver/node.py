"""CSI Node service: kubelet's entry points, thin over the Publisher."""

from __future__ import annotations

from typing import Any

import grpc
from sscsi_proto import csi_pb2, csi_pb2_grpc

from .publisher import Publisher, PublishRequest
from .rpc import VolumeLocks, rpc

_VOLUME_ID = ("volume_id", "Volume ID missing in request")
_TARGET = ("target_path", "Target path missing in request")
_STAGING = ("staging_target_path", "Target path missing in request")
_CAPABILITY = ("volume_capability", "Volume capability missing in request")
_CONTEXT = ("volume_context", "Volume attributes missing in request")

Ctx = grpc.aio.ServicerContext[Any, Any]


class NodeService(csi_pb2_grpc.NodeServicer):
    def __init__(self, node_id: str, publisher: Publisher) -> None:
        self._node_id = node_id
        self._publisher = publisher
        self.volume_locks = VolumeLocks()

    @rpc(_CAPABILITY, _VOLUME_ID, _TARGET, _CONTEXT, lock_on="target_path")
    async def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: Ctx
    ) -> csi_pb2.NodePublishVolumeResponse:
        remaining = context.time_remaining()
        await self._publisher.publish(
            PublishRequest(
                target_path=request.target_path,
                readonly=request.readonly,
                volume_context=dict(request.volume_context),
                secrets=dict(request.secrets),
                deadline=remaining - 1.0 if remaining is not None and remaining > 2.0 else None,
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
        stage = csi_pb2.NodeServiceCapability(
            rpc=csi_pb2.NodeServiceCapability.RPC(type=csi_pb2.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME)
        )
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[stage])

    @rpc()
    async def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: Ctx
    ) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self._node_id)
