"""The `v1alpha1.CSIDriverProvider` servicer of the reference (e2e) provider.

Behaves like the upstream Secrets Store CSI Driver's e2e test provider:

* ``Version`` answers ``v1alpha1`` / ``E2EMockProvider`` / ``v0.0.10``.
* ``Mount`` JSON-decodes ``attributes``, ``secrets`` (``"null"`` allowed) and
  ``permission``, requires ``target_path``, reads the ``objects`` attribute (see
  `sscsi_provider.objects`) and returns one file per object (path ``objectName``,
  mode 0) plus the version ``secret/<objectName>`` = ``v1``. Bad input is
  INVALID_ARGUMENT with a message naming the problem.
* Rotation: while the process-wide rotation flag is on, a pod (attribute
  ``csi.storage.k8s.io/pod.uid``) that an earlier successful Mount already served
  gets contents ``rotated`` and version ``v2`` for every object.
* Token validation: while a set of audiences is configured, the attribute
  ``csi.storage.k8s.io/serviceAccount.tokens`` must be a JSON object holding a
  ``{"token": ..., "expirationTimestamp": ...}`` entry with a non-empty token for
  each of them; otherwise INVALID_ARGUMENT naming the missing audience.

Extensions for our own tests:

* Per-object keys ``objectAlias``, ``objectContent``, ``objectSize``,
  ``objectMode`` and ``objectVersion`` (documented in `sscsi_provider.objects`).
* Stamped contents (parameters ``stampPeriodSeconds``/``stampSalt``, documented in
  `sscsi_provider.stamp`): one time-derived version per Mount, checkable lines.
* Fault injection (set over HTTP, see `sscsi_provider.control`; it stays in force
  for every later Mount until set back to ``none``):

  ``none``         normal behaviour (default)
  ``error-code``   a MountResponse carrying only ``error.code`` (no files, no versions)
  ``unavailable``  gRPC status UNAVAILABLE
  ``slow``         wait the configured seconds first, then answer normally
  ``no-versions``  files as usual but an empty ``object_version`` list
  ``bad-path``     an extra file whose path is ``../escape``
  ``hang``         no answer until the mode changes (then the new mode applies) or the
                   caller goes away; other calls and the control server keep answering
  ``garbage``      the request is served, but the bytes sent back are not a valid
                   MountResponse (`GARBAGE_RESPONSE`, serialized by `sscsi_provider.server`)

Nothing here logs file contents, the secrets JSON or tokens: only object names,
versions and the pod's namespace/name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from sscsi_proto import provider_pb2, provider_pb2_grpc

from sscsi_provider.objects import (
    DEFAULT_VERSION,
    ROTATED_CONTENTS,
    ROTATED_VERSION,
    ObjectsError,
    ObjectSpec,
    parse_objects,
)
from sscsi_provider.stamp import Stamp, StampError, stamp_for
from sscsi_provider.state import Fault, FaultMode, ProviderState

log = logging.getLogger(__name__)

API_VERSION = "v1alpha1"
RUNTIME_NAME = "E2EMockProvider"
RUNTIME_VERSION = "v0.0.10"

ATTR_OBJECTS = "objects"
ATTR_POD_UID = "csi.storage.k8s.io/pod.uid"
ATTR_POD_NAME = "csi.storage.k8s.io/pod.name"
ATTR_POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
ATTR_SA_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"

BAD_PATH = "../escape"
BAD_PATH_CONTENTS = b"escape"

_SLOW_TICK = 0.05

# Returned by `mount` under the ``garbage`` fault: the server's serializer sends junk for this very object.
GARBAGE_RESPONSE = provider_pb2.MountResponse()


class MountError(Exception):
    """A Mount failure to report as a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> MountError:
    return MountError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _always_active() -> bool:
    return True


@dataclass(frozen=True)
class _Pod:
    uid: str
    namespace: str
    name: str


def decode_attributes(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _invalid(f"failed to unmarshal attributes: {exc}") from None
    if not isinstance(value, dict):
        raise _invalid("failed to unmarshal attributes: expected a JSON object")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid(f"failed to unmarshal attributes: value of {key!r} is not a string")
    return value


def decode_secrets(raw: str) -> dict[str, str] | None:
    """Validated only: the node-publish secret is never used, logged or echoed."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _invalid(f"failed to unmarshal secrets: {exc}") from None
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid("failed to unmarshal secrets: expected a JSON object of strings or null")
    return value


def decode_permission(raw: str) -> int:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _invalid(f"failed to unmarshal file permission: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid("failed to unmarshal file permission: expected a non-negative integer")
    return value


class ProviderService(provider_pb2_grpc.CSIDriverProviderServicer):
    """Pure request -> response logic; `Version`/`Mount` adapt it to a gRPC context."""

    def __init__(self, state: ProviderState, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self._clock = clock  # wall clock of the stamped versions

    # gRPC entry points -------------------------------------------------------
    def Version(
        self, request: provider_pb2.VersionRequest, context: grpc.ServicerContext
    ) -> provider_pb2.VersionResponse:
        return self.version(request)

    def Mount(
        self, request: provider_pb2.MountRequest, context: grpc.ServicerContext
    ) -> provider_pb2.MountResponse:
        try:
            return self.mount(request, is_active=context.is_active)
        except MountError as exc:
            context.abort(exc.code, exc.message)

    # logic -------------------------------------------------------------------
    def version(self, request: provider_pb2.VersionRequest) -> provider_pb2.VersionResponse:
        return provider_pb2.VersionResponse(
            version=API_VERSION, runtime_name=RUNTIME_NAME, runtime_version=RUNTIME_VERSION
        )

    def mount(
        self, request: provider_pb2.MountRequest, *, is_active: Callable[[], bool] = _always_active
    ) -> provider_pb2.MountResponse:
        """Serve one Mount; raises MountError for anything reported as a gRPC status."""
        call = self.state.count_mount()
        fault = self.state.fault
        pod = _Pod("", "", "")
        try:
            if fault.mode is FaultMode.HANG:
                fault = self._hang(is_active)
            if fault.mode is FaultMode.SLOW:
                self._delay(fault.seconds, is_active)
            if fault.mode is FaultMode.UNAVAILABLE:
                raise MountError(grpc.StatusCode.UNAVAILABLE, "provider unavailable (injected fault)")

            attributes = decode_attributes(request.attributes)
            pod = _Pod(
                uid=attributes.get(ATTR_POD_UID, ""),
                namespace=attributes.get(ATTR_POD_NAMESPACE, ""),
                name=attributes.get(ATTR_POD_NAME, ""),
            )
            decode_secrets(request.secrets)
            decode_permission(request.permission)
            if not request.target_path:
                raise _invalid("target_path is not set")
            self._validate_tokens(attributes)
            try:
                specs = parse_objects(attributes.get(ATTR_OBJECTS))
                stamp = stamp_for(attributes, pod.namespace, pod.name, clock=self._clock)
            except (ObjectsError, StampError) as exc:
                raise _invalid(str(exc)) from None
        except MountError as exc:
            log.warning(
                "mount rejected",
                extra={
                    "call": call,
                    "pod_namespace": pod.namespace,
                    "pod_name": pod.name,
                    "code": exc.code.name,
                    "reason": exc.message,
                    "fault": fault.mode.value,
                },
            )
            raise

        names = [spec.name for spec in specs]
        if fault.mode is FaultMode.ERROR_CODE:
            log.info(
                "mount answered with error code (injected fault)",
                extra={
                    "call": call,
                    "pod_namespace": pod.namespace,
                    "pod_name": pod.name,
                    "objects": names,
                    "error_code": fault.code,
                },
            )
            return provider_pb2.MountResponse(error=provider_pb2.Error(code=fault.code))

        rotated = stamp is None and self.state.rotation and self.state.pod_seen(pod.uid)
        response = _response(specs, stamp, rotated=rotated)
        if fault.mode is FaultMode.NO_VERSIONS:
            del response.object_version[:]
        elif fault.mode is FaultMode.BAD_PATH:
            response.files.append(provider_pb2.File(path=BAD_PATH, contents=BAD_PATH_CONTENTS))

        self.state.record_pod(pod.uid)
        log.info(
            "mount answered with garbage bytes (injected fault)"
            if fault.mode is FaultMode.GARBAGE
            else "mount",
            extra={
                "call": call,
                "pod_namespace": pod.namespace,
                "pod_name": pod.name,
                "objects": names,
                "versions": [f"{v.id}={v.version}" for v in response.object_version],
                "rotated": rotated,
                "stamped": stamp is not None,
                "fault": fault.mode.value,
            },
        )
        return GARBAGE_RESPONSE if fault.mode is FaultMode.GARBAGE else response

    # helpers -----------------------------------------------------------------
    def _validate_tokens(self, attributes: dict[str, str]) -> None:
        required = self.state.required_audiences
        if not required:
            return
        raw = attributes.get(ATTR_SA_TOKENS, "")
        if not raw:
            raise _invalid(f"{ATTR_SA_TOKENS} is not set; required audience(s): {', '.join(required)}")
        try:
            tokens: Any = json.loads(raw)
        except ValueError:
            # The decoder's message may quote the document, which holds tokens: say nothing more.
            raise _invalid(f"{ATTR_SA_TOKENS} is not valid JSON") from None
        if not isinstance(tokens, dict):
            raise _invalid(f"{ATTR_SA_TOKENS} must be a JSON object keyed by audience")
        for audience in required:
            entry = tokens.get(audience)
            token = entry.get("token") if isinstance(entry, dict) else None
            if not isinstance(token, str) or not token:
                raise _invalid(f"service account token for audience {audience!r} is missing")

    def _hang(self, is_active: Callable[[], bool]) -> Fault:
        """Wait for the ``hang`` mode to end; the fault then in force (CANCELLED once the caller left)."""
        fault = self.state.wait_while(FaultMode.HANG, is_active)
        if fault is None:
            raise MountError(
                grpc.StatusCode.CANCELLED, "caller went away while the mount hung (injected fault)"
            )
        return fault

    @staticmethod
    def _delay(seconds: float, is_active: Callable[[], bool]) -> None:
        """Sleep, but give up early once the caller has gone (deadline or cancel)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not is_active():
                raise MountError(grpc.StatusCode.CANCELLED, "caller went away during injected delay")
            time.sleep(min(_SLOW_TICK, remaining))


def _response(specs: list[ObjectSpec], stamp: Stamp | None, *, rotated: bool) -> provider_pb2.MountResponse:
    """One file and one version per object: stamped, rotated or the object's own value."""
    response = provider_pb2.MountResponse()
    for spec in specs:
        if stamp is not None:
            contents, version = stamp.contents(spec.name), stamp.version_label
        elif rotated:
            contents, version = ROTATED_CONTENTS, ROTATED_VERSION
        else:
            contents, version = spec.contents(), spec.version or DEFAULT_VERSION
        response.files.append(provider_pb2.File(path=spec.path, mode=spec.mode or 0, contents=contents))
        response.object_version.append(provider_pb2.ObjectVersion(id=spec.version_id, version=version))
    return response
