"""Cross-cutting behaviour of every CSI RPC: required fields, per-volume serialisation, request logs.

Each servicer method is wrapped with `@rpc(...)`. Request logs carry only
identifiers (volume id, target path, pod): never `secrets` or service-account tokens.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from .errors import DriverError
from .keyed_lock import KeyedLock
from .models import SA_TOKENS

log = logging.getLogger("sscsi_driver.rpc")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class HasLocks(Protocol):
    volume_locks: KeyedLock[str]  # `lock_on` values (the target path)


_LOGGED_FIELDS = ("volume_id", "target_path", "staging_target_path", "readonly", "volume_path")


def describe(request: Message) -> dict[str, Any]:
    """Loggable summary of a request: identifiers only."""
    out: dict[str, Any] = {}
    for name in _LOGGED_FIELDS:
        if name in request.DESCRIPTOR.fields_by_name:
            value = getattr(request, name)
            if value:
                out[name] = value
    if "volume_context" in request.DESCRIPTOR.fields_by_name:
        ctx = getattr(request, "volume_context")  # noqa: B009 - typed per message
        for key in ("csi.storage.k8s.io/pod.namespace", "csi.storage.k8s.io/pod.name", "secretProviderClass"):
            if key in ctx:
                out[key.rsplit("/", 1)[-1]] = ctx[key]
        if SA_TOKENS in ctx:
            out["tokens"] = "***stripped***"
    if "secrets" in request.DESCRIPTOR.fields_by_name and len(getattr(request, "secrets")):  # noqa: B009
        out["secrets"] = "***stripped***"
    return out


def _missing(request: Message, field: str) -> bool:
    if request.DESCRIPTOR.fields_by_name[field].message_type is not None and not hasattr(
        getattr(request, field), "items"
    ):
        return not request.HasField(field)
    return not getattr(request, field)


Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def rpc(
    *required: tuple[str, str], lock_on: str | None = None
) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Wrap a servicer method.

    required: (field, message) pairs checked in order; a missing one aborts with INVALID_ARGUMENT.
    lock_on: request field whose value serialises calls (CSI expects one operation per volume at a time).
    """

    def decorate(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
        method = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
            started = time.monotonic()
            verbose = log.isEnabledFor(logging.DEBUG)  # the summary is built only when it is logged
            if verbose:
                log.debug("request", extra={"method": method, **describe(request)})
            try:
                for field, message in required:
                    if _missing(request, field):
                        raise DriverError(message, code=grpc.StatusCode.INVALID_ARGUMENT, error_type="")
                if lock_on is not None:
                    async with self.volume_locks.hold(str(getattr(request, lock_on))):
                        response = await fn(self, request, context)
                else:
                    response = await fn(self, request, context)
            except grpc.aio.AbortError:
                raise
            except DriverError as err:
                log.info(
                    "rpc failed",
                    extra={
                        "method": method,
                        "code": err.code.name,
                        "error": err.message,
                        "duration_s": round(time.monotonic() - started, 4),
                        **describe(request),
                    },
                )
                await context.abort(err.code, err.message)
            except Exception:
                log.exception("rpc crashed", extra={"method": method, **describe(request)})
                await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error, see driver logs")
            if verbose:
                log.debug(
                    "response",
                    extra={
                        "method": method,
                        "duration_s": round(time.monotonic() - started, 4),
                        **describe(request),
                    },
                )
            return response

        return wrapper

    return decorate
