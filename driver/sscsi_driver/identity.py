"""CSI Identity service."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import BoolValue
from sscsi_proto import csi_pb2, csi_pb2_grpc

from .rpc import rpc


class IdentityService(csi_pb2_grpc.IdentityServicer):
    def __init__(self, name: str, version: str) -> None:
        self._name = name
        self._version = version

    @rpc()
    async def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> csi_pb2.GetPluginInfoResponse:
        if not self._name:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "driver name not configured")
        if not self._version:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "driver version not configured")
        return csi_pb2.GetPluginInfoResponse(name=self._name, vendor_version=self._version)

    @rpc()
    async def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        # A node-only plugin: no controller service, no topology.
        return csi_pb2.GetPluginCapabilitiesResponse()

    @rpc()
    async def Probe(
        self, request: csi_pb2.ProbeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> csi_pb2.ProbeResponse:
        return csi_pb2.ProbeResponse(ready=BoolValue(value=True))
