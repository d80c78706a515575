"""Calls provider plugins over `<dir>/<provider>.sock` with the upstream v1alpha1 API."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from sscsi_proto import provider_pb2, provider_pb2_grpc

from . import errors
from .atomic_writer import Payload
from .provider_socket import UntrustedSocket, check_socket

log = logging.getLogger(__name__)

PROVIDER_NAME = re.compile(r"^[a-zA-Z0-9_-]{0,30}$")
FILE_PERMISSION = "420"  # json.Marshal(os.FileMode(0644)) in upstream: a decimal string

# Same retry behaviour as upstream's client: wait for the socket, retry UNAVAILABLE.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "v1alpha1.CSIDriverProvider"}],
                "waitForReady": True,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "1s",
                    "maxBackoff": "10s",
                    "backoffMultiplier": 1.1,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass(frozen=True, slots=True)
class MountResult:
    files: tuple[Payload, ...]
    versions: dict[str, str]


def _grpc_message(err: grpc.aio.AioRpcError) -> str:
    code = err.code()
    name = "".join(part.title() for part in code.name.split("_"))
    return f"rpc error: code = {name} desc = {err.details()}"


class ProviderClients:
    """One channel per provider socket, created on first use and kept for the process lifetime."""

    def __init__(
        self,
        dirs: Sequence[Path],
        max_recv_msg_size: int,
        timeout: float,
        allowed_uids: frozenset[int] = frozenset(),
    ) -> None:
        self._dirs = tuple(dirs)
        self._allowed_uids = allowed_uids
        self._max_recv = max_recv_msg_size
        self._timeout = timeout
        self._channels: dict[str, tuple[grpc.aio.Channel, provider_pb2_grpc.CSIDriverProviderAsyncStub]] = {}

    def socket_path(self, provider: str) -> Path:
        if not PROVIDER_NAME.match(provider):
            raise errors.failed(f'invalid provider: provider "{provider}"', errors.PROVIDER_LOOKUP_FAILED)
        for directory in self._dirs:
            candidate = directory / f"{provider}.sock"
            if candidate.exists():
                try:  # checked before every call: a socket replaced since is caught too
                    check_socket(candidate, self._allowed_uids)
                except UntrustedSocket as err:
                    log.error("provider socket refused", extra={"provider": provider, "error": str(err)})
                    raise errors.failed(
                        f'error connecting to provider "{provider}": {err}', errors.PROVIDER_LOOKUP_FAILED
                    ) from None
                return candidate
        searched = ", ".join(str(d) for d in self._dirs)
        raise errors.failed(
            f'error connecting to provider "{provider}": provider not found: provider "{provider}" '
            f"(no {provider}.sock in {searched}; is the provider installed on this node?)",
            errors.PROVIDER_LOOKUP_FAILED,
        )

    def _stub(self, provider: str) -> provider_pb2_grpc.CSIDriverProviderAsyncStub:
        path = self.socket_path(provider)
        key = str(path)
        if key not in self._channels:
            channel = grpc.aio.insecure_channel(
                f"unix:{path}",
                options=[
                    ("grpc.default_authority", "localhost"),
                    ("grpc.max_receive_message_length", self._max_recv),
                    ("grpc.service_config", _SERVICE_CONFIG),
                    ("grpc.enable_retries", 1),
                ],
            )
            stub: provider_pb2_grpc.CSIDriverProviderAsyncStub = provider_pb2_grpc.CSIDriverProviderStub(
                channel
            )
            self._channels[key] = (channel, stub)
        return self._channels[key][1]

    async def mount(
        self,
        provider: str,
        *,
        attributes: Mapping[str, str],
        secrets: Mapping[str, str],
        target_path: str,
        current_versions: Mapping[str, str],
        timeout: float | None = None,
    ) -> MountResult:
        stub = self._stub(provider)
        request = provider_pb2.MountRequest(
            attributes=json.dumps(dict(attributes)),
            secrets=json.dumps(dict(secrets)) if secrets else "null",
            target_path=target_path,
            permission=FILE_PERMISSION,
            current_object_version=[
                provider_pb2.ObjectVersion(id=k, version=v) for k, v in sorted(current_versions.items())
            ],
        )
        try:
            response = await stub.Mount(request, timeout=timeout or self._timeout)
        except grpc.aio.AioRpcError as err:
            message = _grpc_message(err)
            if (
                err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                and "larger than max" in (err.details() or "").lower()
            ):
                message += (
                    f"; the provider response exceeds --max-call-recv-msg-size={self._max_recv} bytes:"
                    " raise the flag or mount fewer/smaller objects"
                )
                log.warning(
                    "provider response too large", extra={"provider": provider, "limit": self._max_recv}
                )
            raise errors.failed(message, errors.GRPC_PROVIDER_ERROR) from err
        if response.HasField("error") and response.error.code:
            raise errors.failed(
                f"mount request failed with provider error code {response.error.code}", response.error.code
            )
        if not response.object_version:
            raise errors.failed(
                f'provider "{provider}" returned no object versions', errors.GRPC_PROVIDER_ERROR
            )
        versions = {ov.id: ov.version for ov in response.object_version}
        if response.ByteSize() > 1024 * 1024:
            log.warning(
                "provider response above 1 MiB", extra={"provider": provider, "bytes": response.ByteSize()}
            )
        files = tuple(Payload(path=f.path, mode=f.mode, contents=f.contents) for f in response.files)
        return MountResult(files=files, versions=versions)

    async def health_check(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for key, (_, stub) in list(self._channels.items()):
            try:
                resp = await stub.Version(provider_pb2.VersionRequest(version="v1alpha1"), timeout=5.0)
                results[key] = True
                log.info(
                    "provider healthy",
                    extra={
                        "socket": key,
                        "runtime": resp.runtime_name,
                        "runtime_version": resp.runtime_version,
                    },
                )
            except grpc.aio.AioRpcError as err:
                results[key] = False
                log.warning(
                    "provider health check failed", extra={"socket": key, "error": _grpc_message(err)}
                )
        return results

    async def run_health_checks(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.health_check()

    async def close(self) -> None:
        for channel, _ in self._channels.values():
            await channel.close()
        self._channels.clear()
