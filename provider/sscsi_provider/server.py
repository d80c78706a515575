"""The gRPC server on a unix socket, and the ``:authority`` check in front of it.

Like the upstream e2e provider, every call whose ``:authority`` is not ``localhost``
is rejected with UNAUTHENTICATED (the driver dials unix sockets with authority
``localhost``; note that grpc-python's own default authority for ``unix:`` targets
is the percent-encoded socket path, so Python clients must pass the channel option
``("grpc.default_authority", "localhost")``).

grpc-python does not hand ``:authority`` to servicers or interceptors as metadata;
the core passes it as the call's *host*, which the sync server exposes only for
generic (not "registered") method handlers, on the servicer context's private
``_rpc_event.call_details``. The service is therefore registered with a generic
handler, and the interceptor wraps each handler to check the host before the
servicer runs. When the authority cannot be determined the call is rejected:
the unit tests catch a grpcio upgrade that moves it.

Mount's responses go through `serialize_mount_response`, which sends `GARBAGE_BYTES` for the
``garbage`` fault's `GARBAGE_RESPONSE`: the client receives a message it cannot decode.
The worker pool is sized so that Mounts held by the ``hang`` fault (each until its caller's
deadline) leave threads for Version and other Mounts.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
from sscsi_proto import provider_pb2

from sscsi_provider.service import GARBAGE_RESPONSE, ProviderService

log = logging.getLogger(__name__)

SERVICE_NAME = "v1alpha1.CSIDriverProvider"
EXPECTED_AUTHORITY = "localhost"
DEFAULT_ENDPOINT = "unix:///tmp/e2e-provider.sock"
DEFAULT_WORKERS = 32
# Not a MountResponse: field 3 (files) announced as 255 bytes long, followed by 3 bytes.
GARBAGE_BYTES = b"\x1a\xff\x01\x00\x00\x00"

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class EndpointError(ValueError):
    pass


def socket_path_from_endpoint(endpoint: str) -> Path:
    """``unix:///abs/path``, ``unix:path`` or a bare path -> an absolute socket path."""
    endpoint = endpoint.strip()
    if endpoint.startswith("unix://"):
        raw = endpoint[len("unix://") :]
    elif endpoint.startswith("unix:"):
        raw = endpoint[len("unix:") :]
    elif "://" in endpoint:
        raise EndpointError(f"unsupported endpoint {endpoint!r}: only unix sockets are served")
    else:
        raw = endpoint
    if not raw:
        raise EndpointError("endpoint has no socket path")
    return Path(os.path.abspath(raw))


def prepare_socket_path(path: Path) -> None:
    """Create the parent directory and remove a stale socket; refuse to delete anything else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise EndpointError(f"{path} exists and is not a socket; not removing it")
    log.info("removing stale socket", extra={"path": str(path)})
    path.unlink()


def call_authority(context: grpc.ServicerContext) -> str | None:
    """The call's ``:authority``, or None when grpc does not let us see it."""
    for key, value in context.invocation_metadata() or ():
        if key == ":authority":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    event = getattr(context, "_rpc_event", None)
    host = getattr(getattr(event, "call_details", None), "host", None)
    if isinstance(host, bytes) and host:
        return host.decode("utf-8", "replace")
    if isinstance(host, str) and host:
        return host
    return None


class AuthorityInterceptor(grpc.ServerInterceptor):
    """Reject with UNAUTHENTICATED every unary call whose authority is not `expected`."""

    def __init__(self, expected: str = EXPECTED_AUTHORITY) -> None:
        self.expected = expected

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[_Req, _Resp] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        behaviour = handler.unary_unary
        if behaviour is None or handler.request_streaming or handler.response_streaming:
            # The provider API is unary only; refuse anything else outright.
            return None
        method = handler_call_details.method
        expected = self.expected

        def checked(request: _Req, context: grpc.ServicerContext) -> _Resp:
            authority = call_authority(context)
            if authority != expected:
                log.warning(
                    "rejecting call with unexpected authority",
                    extra={"method": method, "authority": authority or "<unknown>"},
                )
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"authority must be {expected!r}")
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def serialize_mount_response(response: provider_pb2.MountResponse) -> bytes:
    """The wire bytes of a MountResponse; junk for the ``garbage`` fault's sentinel."""
    if response is GARBAGE_RESPONSE:
        return GARBAGE_BYTES
    return response.SerializeToString()


def generic_handler(service: ProviderService) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Version": grpc.unary_unary_rpc_method_handler(
            service.Version,
            request_deserializer=provider_pb2.VersionRequest.FromString,
            response_serializer=provider_pb2.VersionResponse.SerializeToString,
        ),
        "Mount": grpc.unary_unary_rpc_method_handler(
            service.Mount,
            request_deserializer=provider_pb2.MountRequest.FromString,
            response_serializer=serialize_mount_response,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def start_grpc_server(
    service: ProviderService, socket_path: Path, *, max_workers: int = DEFAULT_WORKERS
) -> grpc.Server:
    """Bind `socket_path` (after removing a stale socket) and start serving."""
    prepare_socket_path(socket_path)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="provider-grpc"),
        interceptors=[AuthorityInterceptor()],
    )
    server.add_generic_rpc_handlers((generic_handler(service),))
    try:
        bound = server.add_insecure_port(f"unix://{socket_path}")
    except RuntimeError as exc:
        raise EndpointError(f"cannot listen on {socket_path}: {exc}") from exc
    if not bound:
        raise EndpointError(f"cannot listen on {socket_path}")
    server.start()
    return server


def stop_grpc_server(server: grpc.Server, socket_path: Path, *, grace: float = 2.0) -> None:
    server.stop(grace).wait()
    try:
        if stat.S_ISSOCK(socket_path.lstat().st_mode):
            socket_path.unlink()
    except FileNotFoundError:
        pass
