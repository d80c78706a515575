"""NodePublishVolume / NodeUnpublishVolume: the mount lifecycle of one secrets volume.

First publish: resolve the SecretProviderClass, mount a tmpfs, ask the provider
for the files, write them atomically, record the SecretProviderClassPodStatus.
Any failure leaves no mount behind, so kubelet's retry starts clean.

Republish (kubelet, `requiresRepublish: true`): with rotation on and the volume
due (interval elapsed or SPC edited), refresh through the same steps; a failed
refresh keeps the previous files and reports success to kubelet, as upstream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sscsi_kube import NORMAL, WARNING, ApiError, EventRecorder, NamespacedCache

from . import atomic_writer, errors, limits, mounter, target_dir
from .config import Config
from .errors import DriverError
from .keyed_lock import KeyedLock
from .metrics import OS_TYPE, Metrics
from .models import (
    POD_NAME,
    POD_NAMESPACE,
    POD_UID,
    PROVIDER_ATTRIBUTE,
    SA_TOKENS,
    SERVICE_ACCOUNT,
    SPC_ATTRIBUTE,
    PodRef,
    SecretProviderClass,
    valid_object_name,
)
from .provider_client import ProviderClients
from .spcps import PodStatusWriter
from .volumes import VolumeRegistry, VolumeState

log = logging.getLogger(__name__)

VolumeListener = Callable[[VolumeState, SecretProviderClass], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PublishRequest:
    target_path: str
    readonly: bool
    volume_context: Mapping[str, str]
    secrets: Mapping[str, str]
    deadline: float | None = None  # seconds left on kubelet's call
    mount_group: int | None = None  # the pod's fsGroup (CSI volume_mount_group), validated by the caller


class Publisher:
    def __init__(
        self,
        cfg: Config,
        *,
        providers: ProviderClients,
        spcs: NamespacedCache,
        statuses: PodStatusWriter,
        events: EventRecorder,
        metrics: Metrics,
    ) -> None:
        self._cfg = cfg
        self._providers = providers
        self._spcs = spcs
        self._statuses = statuses
        self._events = events
        self._metrics = metrics
        self.volumes = VolumeRegistry()
        self._pod_slots: KeyedLock[str] = KeyedLock(cfg.max_concurrent_publishes_per_pod)
        self.listeners: list[VolumeListener] = []
        self.unpublish_listeners: list[Callable[[str], None]] = []
        self._pods = target_dir.KubeletPods(cfg.kubelet_root_dir)

    # ---- publish ----

    async def publish(self, req: PublishRequest) -> None:
        ctx = req.volume_context
        known = self.volumes.get(req.target_path)
        if known is not None and target_dir.filled(req.target_path):
            # A volume this process published, still mounted and filled: kubelet's periodic
            # republish costs a dict lookup, a clock read and one lstat unless a refresh is due.
            if not self._cfg.enable_secret_rotation or not await self._refresh_due(known):
                return
        else:
            known = None
        pod = PodRef(
            namespace=ctx.get(POD_NAMESPACE, ""),
            name=ctx.get(POD_NAME, ""),
            uid=ctx.get(POD_UID, ""),
            service_account=ctx.get(SERVICE_ACCOUNT, ""),
        )
        spc_name = ctx.get(SPC_ATTRIBUTE, "")
        target = Path(req.target_path)
        if known is not None:  # its path passed the target check when this process first published it
            await self._refresh(req, pod, spc_name, target, known)
            return
        self._pods.check(req.target_path)
        if target_dir.create(target):  # the usual first publish: nothing there yet, no thread needed
            mounted = False
        else:
            mounted = await asyncio.to_thread(target_dir.ensure_mount_point, target)
        # A tmpfs without `..data` never got its files (e.g. the driver was killed mid-publish):
        # finish the first publish instead of reporting an empty volume as published.
        if not (mounted and (target / "..data").is_symlink()):
            await self._first_publish(req, pod, spc_name, target, mounted=mounted)
        elif self._cfg.enable_secret_rotation:
            previous = self.volumes.get(req.target_path)
            if previous is None or await self._refresh_due(previous):
                await self._refresh(req, pod, spc_name, target, previous)
        # else: already published and rotation is off; nothing to do (idempotent)

    async def _first_publish(
        self, req: PublishRequest, pod: PodRef, spc_name: str, target: Path, *, mounted: bool
    ) -> None:
        """Mount the tmpfs (unless there), fill it; any failure leaves no mount behind and fails the call."""
        try:
            async with self._pod_slots.hold(_slot_key(pod)):
                spc = await self._spc_for(req, pod, spc_name)
                if not mounted:
                    await self._mount_tmpfs(target)
                try:
                    state, _ = await self._fill(req, pod, spc_name, spc, target)
                except DriverError as err:
                    raise errors.failed(
                        f"failed to mount secrets store objects for pod {_who(pod)}, err: {err.message}",
                        err.error_type,
                    ) from err
                await self._notify(state, spc)
        except DriverError as err:
            provider = req.volume_context.get(PROVIDER_ATTRIBUTE, "")
            self._metrics.node_publish_error.labels(provider, err.error_type, OS_TYPE).inc()
            await asyncio.to_thread(target_dir.cleanup_failed_mount, target)
            raise
        self._metrics.node_publish.labels(spc.provider, OS_TYPE).inc()

    async def _refresh(
        self, req: PublishRequest, pod: PodRef, spc_name: str, target: Path, previous: VolumeState | None
    ) -> None:
        """Refetch a published volume (`previous`: what it holds, None after a driver restart); a failure
        keeps the previous files and is not returned to kubelet (upstream masks remount errors,
        kubernetes/kubernetes#121271)."""
        started = time.monotonic()
        try:
            async with self._pod_slots.hold(_slot_key(pod)):
                spc = await self._spc_for(req, pod, spc_name)
                state, changed = await self._fill(req, pod, spc_name, spc, target)
                if changed:
                    log.info("volume refreshed", extra={"target_path": str(target), "pod": _who(pod)})
                if previous is not None and previous.versions != state.versions:
                    self._events.pod_event(
                        pod,
                        NORMAL,
                        "MountRotationComplete",
                        f"successfully rotated mounted contents for spc {spc_name}",
                    )
                await self._notify(state, spc)
        except DriverError as err:
            provider = req.volume_context.get(PROVIDER_ATTRIBUTE, "")
            self._metrics.node_publish_error.labels(provider, err.error_type, OS_TYPE).inc()
            self._metrics.rotation_reconcile_error.labels(provider, err.error_type, OS_TYPE, "true").inc()
            self._events.pod_event(
                pod, WARNING, "MountRotationFailed", f"failed to rotate {spc_name}: {err.message}"
            )
            log.warning(
                "refresh failed, previous contents kept",
                extra={"target_path": req.target_path, "pod": _who(pod), "error": err.message},
            )
            if previous is not None:
                previous.refreshed_at = time.monotonic()  # retry after the interval, not on every republish
            return
        rotated = "true" if previous is None or previous.versions != state.versions else "false"
        self._metrics.node_publish.labels(spc.provider, OS_TYPE).inc()
        self._metrics.rotation_reconcile.labels(spc.provider, OS_TYPE, rotated).inc()
        self._metrics.rotation_reconcile_duration.labels(OS_TYPE).observe(time.monotonic() - started)

    async def _refresh_due(self, state: VolumeState) -> bool:
        if state.due(self._cfg.rotation_poll_interval):
            return True
        try:  # an SPC edited since the last refresh takes effect at once
            meta = (await self._spcs.get(state.pod.namespace, state.spc_name)).get("metadata") or {}
            return int(meta.get("generation") or 0) != state.spc_generation
        except (ApiError, OSError, ValueError, TypeError, AttributeError):
            return False

    # ---- the steps both paths share ----

    async def _spc_for(self, req: PublishRequest, pod: PodRef, spc_name: str) -> SecretProviderClass:
        """The SecretProviderClass the request mounts, checked in upstream's order."""
        if not spc_name:
            raise errors.failed("secretProviderClass is not set", errors.SPC_NOT_FOUND)
        if not valid_object_name(spc_name):
            raise errors.invalid_argument(
                f"secretProviderClass {spc_name!r} is not a valid object name (a SecretProviderClass "
                f"is looked up in the pod's namespace {pod.namespace} only)"
            )
        try:
            spc = SecretProviderClass.from_dict(await self._spcs.get(pod.namespace, spc_name))
        except ApiError as err:
            raise errors.failed(
                f"failed to get secretproviderclass {pod.namespace}/{spc_name}, error: {err}",
                errors.SPC_NOT_FOUND,
            ) from err
        if not spc.provider:
            raise errors.failed(f"provider not set in {pod.namespace}/{spc_name}", errors.SPC_NOT_FOUND)
        if not spc.parameters:
            raise errors.failed(f"parameters not set in {pod.namespace}/{spc_name}", errors.SPC_NOT_FOUND)
        if not req.readonly:
            raise errors.invalid_argument("Readonly is not true in request")
        return spc

    @staticmethod
    async def _mount_tmpfs(target: Path) -> None:
        try:
            await asyncio.to_thread(mounter.mount_tmpfs, target)
        except OSError as err:
            raise errors.failed(f"failed to mount tmpfs at {target}: {err}", errors.FAILED_TO_MOUNT) from err

    async def _fill(
        self, req: PublishRequest, pod: PodRef, spc_name: str, spc: SecretProviderClass, target: Path
    ) -> tuple[VolumeState, bool]:
        """Provider Mount -> bounds -> atomic write -> SPCPS; the volume's new state (recorded) and
        whether any file changed."""
        attributes = dict(spc.parameters)
        attributes.update(req.volume_context)
        tokens = req.secrets.get(SA_TOKENS) or req.volume_context.get(SA_TOKENS, "")
        if tokens:
            attributes[SA_TOKENS] = tokens
        previous = self.volumes.get(str(target))
        current = dict(previous.versions) if previous else self._statuses.current_versions(pod, spc_name)
        try:
            result = await self._providers.mount(
                spc.provider,
                attributes=attributes,
                secrets=req.secrets,
                target_path=str(target),
                current_versions=current,
                timeout=min(self._cfg.provider_timeout, req.deadline) if req.deadline else None,
            )
        except DriverError as err:
            # A provider echoing a token in its error would put it in events and logs.
            raise errors.redacted(err, token_values(tokens)) from None
        try:
            limits.check_reply(
                result.files,
                max_files=self._cfg.max_objects_per_volume,
                max_file_size=self._cfg.max_file_size,
            )
            changed = await asyncio.to_thread(
                functools.partial(atomic_writer.write_payloads, group=req.mount_group), target, result.files
            )
        except (limits.LimitExceeded, atomic_writer.PayloadError, OSError) as err:
            raise errors.failed(str(err), errors.FILE_WRITE_ERROR) from err
        try:
            await self._statuses.upsert(pod, spc_name, str(target), result.versions)
        except ApiError as err:
            raise errors.failed(
                f"failed to create secret provider class pod status for pod {_who(pod)}, err: {err}",
                errors.FAILED_TO_MOUNT,
            ) from err
        state = VolumeState(
            target=str(target),
            pod=pod,
            spc_name=spc_name,
            provider=spc.provider,
            spc_generation=spc.generation,
            versions=dict(result.versions),
        )
        if previous is None:
            self._spcs.acquire(pod.namespace)
        self.volumes.put(state)
        return state, changed

    async def _notify(self, state: VolumeState, spc: SecretProviderClass) -> None:
        for listener in self.listeners:
            await listener(state, spc)

    # ---- unpublish ----

    async def unpublish(self, target_path: str) -> None:
        try:
            await asyncio.to_thread(target_dir.unmount_and_remove, Path(target_path))
        except OSError as err:
            self._metrics.node_unpublish_error.labels(OS_TYPE).inc()
            raise errors.internal(
                f"failed to clean and unmount target path {target_path}, err: {err}", errors.FAILED_TO_MOUNT
            ) from err
        state = self.volumes.pop(target_path)
        if state is not None:
            self._spcs.release(state.pod.namespace)
        for forget in self.unpublish_listeners:
            forget(target_path)
        self._metrics.node_unpublish.labels(OS_TYPE).inc()


def token_values(tokens: str) -> list[str]:
    """The token strings in kubelet's `csi.storage.k8s.io/serviceAccount.tokens` JSON."""
    try:
        doc = json.loads(tokens) if tokens else {}
    except ValueError:
        return [tokens]
    if not isinstance(doc, dict):
        return [tokens]
    return [str(v["token"]) for v in doc.values() if isinstance(v, dict) and v.get("token")]


def _who(pod: PodRef) -> str:
    return f"{pod.namespace}/{pod.name}"


def _slot_key(pod: PodRef) -> str:
    return pod.uid or _who(pod)
