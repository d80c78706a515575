"""kubelet plugin registration, served by the driver itself instead of node-driver-registrar.

kubelet records a plugin as seen before it asks the CSI handler to register it, so a registration that
fails (kubelet could not write CSINode while the apiserver was down) is never retried on the same
socket. node-driver-registrar answers that by exiting, and kubelet restarts it with crash-loop back-off:
after a few overlapping outages the driver stays unknown to kubelet for minutes and every pod waits.
Here a refused registration makes the socket be created again after a short back-off (1 s, doubling to
30 s, reset by a success), which kubelet's plugin watcher takes for a new plugin and registers afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import grpc
from sscsi_proto import pluginregistration_pb2 as reg_pb2
from sscsi_proto import pluginregistration_pb2_grpc as reg_grpc

from .rpc import rpc

log = logging.getLogger("sscsi_driver.registration")

CSI_PLUGIN = "CSIPlugin"
CSI_VERSIONS = ("1.0.0",)


def registration_socket(directory: Path, driver_name: str) -> Path:
    """kubelet's naming for a CSI plugin's registration socket in its plugins_registry directory."""
    return directory / f"{driver_name}-reg.sock"


class KubeletRegistration(reg_grpc.RegistrationServicer):
    """Serves GetInfo/NotifyRegistrationStatus on `socket_path`; `registered` once kubelet confirmed."""

    def __init__(
        self,
        socket_path: Path,
        driver_name: str,
        kubelet_endpoint: str,
        *,
        first_retry: float = 1.0,
        max_retry: float = 30.0,
    ) -> None:
        self.socket_path = socket_path
        self.registered = False
        self._info = reg_pb2.PluginInfo(
            type=CSI_PLUGIN,
            name=driver_name,
            endpoint=kubelet_endpoint,
            supported_versions=list(CSI_VERSIONS),
        )
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._retry = first_retry
        self._refused = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._serve()
        self._task = asyncio.create_task(self._register_again_when_refused(), name="kubelet-registration")

    async def stop(self) -> None:
        """Removing the socket tells kubelet the plugin is gone, as node-driver-registrar does on SIGTERM."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    @rpc()
    async def GetInfo(
        self, request: reg_pb2.InfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> reg_pb2.PluginInfo:
        return self._info

    @rpc()
    async def NotifyRegistrationStatus(
        self, request: reg_pb2.RegistrationStatus, context: grpc.aio.ServicerContext[Any, Any]
    ) -> reg_pb2.RegistrationStatusResponse:
        if request.plugin_registered:
            self.registered = True
            self._retry = self._first_retry
            log.info(
                "registered with kubelet", extra={"driver": self._info.name, "endpoint": self._info.endpoint}
            )
        else:
            self.registered = False
            log.warning(
                "kubelet refused the registration; registering again",
                extra={"error": request.error, "retry_in_s": self._retry},
            )
            self._refused.set()
        return reg_pb2.RegistrationStatusResponse()

    async def _register_again_when_refused(self) -> None:
        while True:
            await self._refused.wait()
            await asyncio.sleep(self._retry)
            self._retry = min(self._retry * 2, self._max_retry)
            self._refused.clear()
            await self._close()
            await self._serve()

    async def _serve(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        unlink_socket(self.socket_path)
        server = grpc.aio.server()
        reg_grpc.add_RegistrationServicer_to_server(self, server)
        server.add_insecure_port(f"unix:{self.socket_path}")
        await server.start()
        self._server = server

    async def _close(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        unlink_socket(self.socket_path)


def unlink_socket(path: str | Path) -> None:
    """Remove a unix socket file that may already be gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
