"""Mirror mounted secrets into Kubernetes Secrets (a SecretProviderClass's `secretObjects`).

The publisher calls `SecretSyncer.on_volume` after every successful mount and refresh.
For each secretObject the desired Secret is built from the files just mounted and
created or updated in the pod's namespace:

- `data` is ours: exactly the keys listed in the secretObject, raw file bytes
  (`kubernetes.io/tls`: key and certificates split from the PEM bundle);
- only Secrets the driver created (label `secrets-store.csi.k8s.io/managed: "true"`) are
  ever written, and a Secret follows the definition of the SPC that created it
  (`sync_ownership`): an unrelated Secret of the same name, or another SPC's different
  definition, is left alone with a Warning event `SecretSyncRefused` on the pod;
- labels and annotations are merged into what is there (ours win, other tools' stay),
  plus `secrets-store.csi.k8s.io/managed: "true"` and the owning SPC's annotations;
- owner references are only ever added, matched by uid: the pod's own owners (e.g. its
  ReplicaSet), or the pod's SecretProviderClassPodStatus for a bare pod. The Secret thus
  lives while any consuming workload lives and is garbage-collected after the last one.
  Updates are optimistic (resourceVersion) and start from the current object, so owners
  added by another node are never dropped;
- `type` is immutable in the API: a changed type deletes and recreates the Secret,
  keeping its owners.

Reads come from node-filtered watch caches (pods by `spec.nodeName`, Secrets by the
managed label, SPCPS by the node label), so a refresh that changes nothing sends no
request. A failure becomes a Warning event `FailedToCreateSecret` on the pod and a retry
with backoff; it never fails the mount, and the other Secrets of the SPC still sync.
Every synced volume is re-checked every 5 minutes (upstream requeues as often), so a
Secret deleted by hand comes back.
Secret contents never reach a log line or an event.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import atomic_writer, tls
from .kube.api import POD, SECRET, SPC, SPCPS, ApiError, KubeApi, Obj
from .kube.cache import Informer
from .kube.events import WARNING, EventRecorder
from .metrics import OS_TYPE, Metrics
from .models import (
    MANAGED_LABEL,
    PodRef,
    SecretObject,
    SecretProviderClass,
    spcps_name,
    valid_object_name,
)
from .sync_ownership import (
    REFUSED_REASON,
    RESERVED_ANNOTATIONS,
    Lookup,
    Refusals,
    Verdict,
    judge,
    refusal_message,
)
from .volumes import VolumeState

log = logging.getLogger(__name__)

FAILED_REASON = "FailedToCreateSecret"
TLS_TYPE = "kubernetes.io/tls"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"
# Documented by upstream; any other type string is passed through and left to the apiserver.
DOCUMENTED_TYPES = frozenset(
    {
        "Opaque",
        "kubernetes.io/basic-auth",
        "bootstrap.kubernetes.io/token",
        "kubernetes.io/dockerconfigjson",
        "kubernetes.io/dockercfg",
        "kubernetes.io/ssh-auth",
        "kubernetes.io/service-account-token",
        TLS_TYPE,
    }
)
FORBIDDEN_HINT = (
    "the driver may not write Secrets: enable secret sync in the ClusterCSIDriver, which grants the "
    "RBAC (upstream Helm chart: syncSecret.enabled=true), or run the driver with --enable-secret-sync=false"
)
OWNER_FIELDS = ("apiVersion", "kind", "name", "uid")
WRITE_ATTEMPTS = 5


class SyncError(Exception):
    """Why one Secret could not be synced; the message is safe for logs and events."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class DesiredSecret:
    name: str
    type: str
    data: dict[str, str] = field(repr=False)  # base64, as the API carries it
    labels: dict[str, str]
    annotations: dict[str, str]


# ---- building the desired Secret from the mounted files (pure, runs in a worker thread) ----


def _value(secret_type: str, key: str, object_name: str, contents: bytes) -> bytes:
    if secret_type != TLS_TYPE:
        return contents
    try:
        if key == TLS_KEY:
            return tls.private_key_pem(contents)
        if key == TLS_CERT:
            return tls.certificates_pem(contents)
    except tls.TlsError as err:
        raise SyncError(f"bad TLS material in objectName {object_name} for key {key}: {err}") from None
    raise SyncError(f"key {key} is not allowed in a {TLS_TYPE} Secret (use {TLS_CERT} and {TLS_KEY})")


def build_secret(obj: SecretObject, files: Mapping[str, Path]) -> DesiredSecret:
    """The Secret one secretObject asks for; `files` is `read_mounted_files(target)`."""
    name = obj.secret_name.strip()
    secret_type = obj.type.strip()
    if not name:
        raise SyncError("secretName is not set in a secretObject")
    if not valid_object_name(name):
        raise SyncError(f"secretName {name!r} is not a valid Secret name")
    if not secret_type:
        raise SyncError(f"type is not set for Secret {name} (e.g. Opaque or {TLS_TYPE})")
    if not obj.data:
        raise SyncError(f"data is not set for Secret {name}")
    data: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    for ref in obj.data:
        object_name, key = ref.object_name.strip(), ref.key.strip()
        if not object_name:
            raise SyncError(f"objectName is not set in a data entry of Secret {name}")
        if not key:
            raise SyncError(f"key is not set for objectName {object_name} in Secret {name}")
        if key in data:
            raise SyncError(f"key {key} appears more than once in Secret {name}")
        if object_name not in contents:
            path = files.get(object_name)
            if path is None:
                raise SyncError(f"file matching objectName {object_name} not found in the pod")
            try:
                contents[object_name] = path.read_bytes()
            except OSError as err:
                raise SyncError(f"cannot read the file of objectName {object_name}: {err.strerror}") from None
        value = _value(secret_type, key, object_name, contents[object_name])
        data[key] = base64.b64encode(value).decode("ascii")
    if secret_type == TLS_TYPE and set(data) != {TLS_CERT, TLS_KEY}:
        raise SyncError(f"a {TLS_TYPE} Secret needs both {TLS_CERT} and {TLS_KEY} keys")
    return DesiredSecret(
        name=name,
        type=secret_type,
        data=data,
        labels={**obj.labels, MANAGED_LABEL: "true"},
        annotations={k: v for k, v in obj.annotations.items() if k not in RESERVED_ANNOTATIONS},
    )


def build_all(objects: Sequence[SecretObject], target: Path) -> list[DesiredSecret | SyncError]:
    """One result per secretObject, in order; errors do not stop the others."""
    try:
        files = atomic_writer.read_mounted_files(target)
    except OSError as err:
        failure = SyncError(f"cannot read the mounted files: {err.strerror}")
        return [failure for _ in objects]
    results: list[DesiredSecret | SyncError] = []
    seen: set[str] = set()
    for obj in objects:
        try:
            desired = build_secret(obj, files)
            if desired.name in seen:
                raise SyncError(f"secretName {desired.name} appears more than once in secretObjects")
            seen.add(desired.name)
            results.append(desired)
        except SyncError as err:
            results.append(err)
    return results


# ---- comparing with and merging into what the cluster has ----


def owner_refs(refs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """apiVersion, kind, name and uid of each reference (controller flags are not copied, as upstream)."""
    return [{k: str(ref.get(k) or "") for k in OWNER_FIELDS} for ref in refs if ref.get("uid")]


def merge_owners(existing: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, str]]) -> list[Any]:
    """`existing` unchanged, plus each wanted owner whose uid is not there yet. Never drops one."""
    merged: list[Any] = [dict(ref) for ref in existing]
    uids = {str(ref.get("uid")) for ref in existing}
    for ref in wanted:
        if ref["uid"] not in uids:
            merged.append(dict(ref))
            uids.add(ref["uid"])
    return merged


def _meta(obj: Obj) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def _contains(have: Mapping[str, Any] | None, want: Mapping[str, str]) -> bool:
    have = have or {}
    return all(have.get(k) == v for k, v in want.items())


def _type_of(obj: Obj) -> str:
    return str(obj.get("type") or "Opaque")


def needs_recreate(existing: Obj, desired: DesiredSecret) -> bool:
    """`type` cannot be updated; neither can anything of a Secret marked immutable."""
    if _type_of(existing) != desired.type:
        return True
    return bool(existing.get("immutable")) and (existing.get("data") or {}) != desired.data


def up_to_date(existing: Obj, desired: DesiredSecret, owners: Sequence[Mapping[str, str]]) -> bool:
    meta = _meta(existing)
    have_uids = {str(ref.get("uid")) for ref in meta.get("ownerReferences") or []}
    return (
        _type_of(existing) == desired.type
        and (existing.get("data") or {}) == desired.data
        and _contains(meta.get("labels"), desired.labels)
        and _contains(meta.get("annotations"), desired.annotations)
        and all(ref["uid"] in have_uids for ref in owners)
    )


def updated_object(existing: Obj, desired: DesiredSecret, owners: Sequence[Mapping[str, str]]) -> Obj:
    """`existing` with our data, labels, annotations and owners; resourceVersion kept for the lock."""
    meta = {k: v for k, v in _meta(existing).items() if k != "managedFields"}
    meta["labels"] = {**(meta.get("labels") or {}), **desired.labels}
    annotations = {**(meta.get("annotations") or {}), **desired.annotations}
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = merge_owners(meta.get("ownerReferences") or [], owners)
    body = {k: v for k, v in existing.items() if k != "stringData"}
    body.update(apiVersion="v1", kind="Secret", metadata=meta, type=desired.type, data=dict(desired.data))
    return body


def new_object(namespace: str, desired: DesiredSecret, owners: Sequence[Mapping[str, Any]]) -> Obj:
    meta: dict[str, Any] = {"name": desired.name, "namespace": namespace, "labels": dict(desired.labels)}
    if desired.annotations:
        meta["annotations"] = dict(desired.annotations)
    if owners:
        meta["ownerReferences"] = [dict(ref) for ref in owners]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": desired.type,
        "data": dict(desired.data),
    }


# ---- the listener ----


@dataclass(slots=True)
class _SharedLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class SecretSyncer:
    """Creates and updates the Secrets of mounted volumes; register `on_volume` as a publisher listener."""

    def __init__(
        self,
        api: KubeApi,
        node: str,
        *,
        spcps: Informer,
        events: EventRecorder,
        metrics: Metrics,
        is_mounted: Callable[[str], bool] = lambda target: True,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        attempt_timeout: float = 30.0,
        cache_timeout: float = 10.0,
        resync_interval: float = 300.0,
        lookup: Lookup | None = None,
        max_secret_objects: int = 1 << 20,
    ) -> None:
        self._api = api
        self._lookup = lookup or self._get_spc
        self._refusals = Refusals(metrics.sync_k8s_secret_refused)
        self._max_secret_objects = max_secret_objects
        self._node = node
        self._spcps = spcps
        self._events = events
        self._metrics = metrics
        self._is_mounted = is_mounted
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._attempt_timeout = attempt_timeout
        self._cache_timeout = cache_timeout
        self._resync_interval = resync_interval
        self._pods: Informer | None = None
        self._secrets: Informer | None = None
        self._locks: dict[tuple[str, str], _SharedLock] = {}
        self._failures: dict[str, int] = {}  # target -> consecutive failed attempts
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._volumes: dict[str, tuple[VolumeState, SecretProviderClass]] = {}  # targets that sync
        self._background: set[asyncio.Task[None]] = set()  # shielded attempts, the resync loop
        self._resync: asyncio.Task[None] | None = None

    # -- lifecycle --

    def _start_caches(self) -> tuple[Informer, Informer]:
        """Started on the first SPC with secretObjects, so nodes that never sync watch nothing extra."""
        if self._pods is None:
            self._pods = Informer(self._api, POD, fields={"spec.nodeName": self._node})
            self._pods.start()
        if self._secrets is None:
            self._secrets = Informer(self._api, SECRET, labels={MANAGED_LABEL: "true"})
            self._secrets.start()
        return self._pods, self._secrets

    async def stop(self) -> None:
        tasks = [*self._retries.values(), *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._retries.clear()
        self._resync = None
        for informer in (self._pods, self._secrets):
            if informer is not None:
                await informer.stop()
        self._pods = self._secrets = None

    def forget(self, target: str) -> None:
        """The volume was unpublished: drop its pending retry. (The Secrets stay; GC removes them.)"""
        task = self._retries.pop(target, None)
        if task is not None:
            task.cancel()
        self._failures.pop(target, None)
        self._volumes.pop(target, None)
        self._refusals.forget(target)

    @property
    def pending_retries(self) -> dict[str, int]:
        """target -> failed attempts so far, for volumes with a retry scheduled."""
        return {t: self._failures.get(t, 0) for t in self._retries}

    # -- entry points --

    async def on_volume(self, state: VolumeState, spc: SecretProviderClass) -> None:
        """Publisher listener: never raises, and sends no request when nothing changed."""
        task = self._retries.pop(state.target, None)
        if task is not None:
            task.cancel()
        if not spc.secret_objects:
            self._failures.pop(state.target, None)
            self._volumes.pop(state.target, None)
            self._refusals.forget(state.target)
            return
        self._volumes[state.target] = (state, spc)
        if self._resync is None and self._resync_interval > 0:
            self._resync = self._spawn(self._resync_loop(), "secret-sync-resync")
        # Shielded: if kubelet gives up on the RPC, the sync still completes in the background.
        await asyncio.shield(self._spawn(self._attempt(state, spc), f"secret-sync {state.target}"))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _resync_loop(self) -> None:
        """Re-check every synced volume now and then (as upstream requeues after 5 minutes): a Secret
        deleted by hand comes back, lost owners are re-added. Free when nothing changed (caches)."""
        while True:
            await asyncio.sleep(self._resync_interval)
            for target, (state, spc) in list(self._volumes.items()):
                if target in self._retries:
                    continue  # a retry is already scheduled
                if await self._still_mounted(target):
                    await self._attempt(state, spc)

    async def _attempt(self, state: VolumeState, spc: SecretProviderClass) -> None:
        try:
            async with asyncio.timeout(self._attempt_timeout):
                ok = await self.sync(state, spc)
        except TimeoutError:
            log.warning(
                "secret sync timed out, will retry",
                extra={"pod": _who(state.pod), "spc": spc.name, "timeout_s": self._attempt_timeout},
            )
            ok = False
        except Exception:
            log.exception("secret sync failed unexpectedly", extra={"pod": _who(state.pod), "spc": spc.name})
            ok = False
        if ok:
            self._failures.pop(state.target, None)
        else:
            self._schedule_retry(state, spc)

    def _schedule_retry(self, state: VolumeState, spc: SecretProviderClass) -> None:
        failures = self._failures.get(state.target, 0)
        self._failures[state.target] = failures + 1
        delay = min(self._retry_initial * (2**failures), self._retry_max)
        task = asyncio.create_task(
            self._retry_after(delay, state, spc), name=f"secret-sync-retry {state.target}"
        )
        previous = self._retries.get(state.target)
        if previous is not None and previous is not asyncio.current_task():
            previous.cancel()  # one pending retry per volume
        self._retries[state.target] = task
        task.add_done_callback(lambda done: self._task_done(state.target, done))
        log.info(
            "secret sync will be retried",
            extra={"pod": _who(state.pod), "spc": spc.name, "delay_s": delay, "attempt": failures + 1},
        )

    def _task_done(self, target: str, task: asyncio.Task[None]) -> None:
        if self._retries.get(target) is task:
            del self._retries[target]

    async def _retry_after(self, delay: float, state: VolumeState, spc: SecretProviderClass) -> None:
        # Stays in self._retries while it runs, so forget() and a new on_volume() can cancel it;
        # a failed attempt replaces the entry with the next retry.
        await asyncio.sleep(delay)
        if await self._still_mounted(state.target):
            await self._attempt(state, spc)

    async def _still_mounted(self, target: str) -> bool:
        """False once the volume was unpublished (forget() not called); its bookkeeping is dropped."""
        if self._is_mounted(target) and await asyncio.to_thread(os.path.isdir, target):
            return True
        self._failures.pop(target, None)
        self._volumes.pop(target, None)
        self._refusals.forget(target)
        return False

    # -- one pass over an SPC's secretObjects --

    async def sync(self, state: VolumeState, spc: SecretProviderClass) -> bool:
        """Make every Secret of `spc` match the volume's files; True when all of them do."""
        if not spc.secret_objects:
            return True
        if len(spc.secret_objects) > self._max_secret_objects:
            self._report(
                state,
                spc,
                "",
                f"{len(spc.secret_objects)} secretObjects, more than "
                f"--max-objects-per-volume={self._max_secret_objects}; none synced",
            )
            return True  # not transient: no retry until the SPC changes
        pods, secrets = self._start_caches()
        ref = state.pod
        try:
            pod = await self._pod(pods, ref)
        except ApiError as err:
            self._report_all(state, spc, f"cannot read pod {_who(ref)}: {err}", err)
            return False
        if pod is None:
            log.info("pod is gone, secret sync skipped", extra={"pod": _who(ref), "spc": spc.name})
            return True
        if _meta(pod).get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in (
            "Succeeded",
            "Failed",
        ):
            return True  # as upstream: a terminating or finished pod no longer asserts ownership
        try:
            owners = await self._owners(pod, ref, spc.name)
        except (ApiError, SyncError) as err:
            message = (
                err.message if isinstance(err, SyncError) else f"cannot determine the Secret owners: {err}"
            )
            self._report_all(state, spc, message, err if isinstance(err, ApiError) else None)
            return False

        results = await asyncio.to_thread(build_all, spc.secret_objects, Path(state.target))
        ok = True
        for obj, result in zip(spc.secret_objects, results, strict=True):
            secret_name = obj.secret_name.strip()
            if isinstance(result, SyncError):
                self._report(state, spc, secret_name, result.message)
                ok = False
                continue
            try:
                verdict = await self._apply(secrets, ref.namespace, spc, obj, result, owners, state.provider)
                if verdict.kind in ("unmanaged", "conflict"):
                    self._refuse(state, spc, result.name, verdict)
                else:
                    self._refusals.clear(state.target, result.name)
            except SyncError as err:
                self._report(state, spc, secret_name, err.message)
                ok = False
            except ApiError as err:
                self._report(state, spc, secret_name, str(err), err)
                ok = False
            except Exception as err:  # transport errors (apiserver unreachable), bad JSON from a proxy
                self._report(state, spc, secret_name, f"request failed: {type(err).__name__}: {err}")
                ok = False
        return ok

    async def _pod(self, pods: Informer, ref: PodRef) -> Obj | None:
        """The pod from the node's pod cache; one GET on a miss. None when it no longer exists."""
        obj = await self._cached(pods, ref.namespace, ref.name)
        if obj is None or (ref.uid and _meta(obj).get("uid") != ref.uid):
            try:
                obj = await self._api.get(POD, ref.name, ref.namespace)
            except ApiError as err:
                if err.not_found:
                    return None
                raise
        if ref.uid and _meta(obj).get("uid") != ref.uid:
            return None  # a newer pod of the same name; this volume belongs to a deleted one
        return obj

    async def _cached(self, informer: Informer, namespace: str, name: str) -> Obj | None:
        try:
            await informer.wait_synced(self._cache_timeout)
        except TimeoutError:
            return None
        return informer.get(namespace, name)

    async def _owners(self, pod: Obj, ref: PodRef, spc_name: str) -> list[dict[str, str]]:
        owners = owner_refs(_meta(pod).get("ownerReferences") or [])
        if owners:
            return owners
        # A bare pod: its SecretProviderClassPodStatus (owned by the pod) owns the Secret.
        name = spcps_name(ref.name, ref.namespace, spc_name)
        status = self._spcps.get(ref.namespace, name)
        if status is None:
            try:
                status = await self._api.get(SPCPS, name, ref.namespace)
            except ApiError as err:
                if err.not_found:
                    raise SyncError(
                        f"SecretProviderClassPodStatus {ref.namespace}/{name} not found"
                    ) from None
                raise
        uid = str(_meta(status).get("uid") or "")
        if not uid:
            raise SyncError(f"SecretProviderClassPodStatus {ref.namespace}/{name} has no uid")
        return [{"apiVersion": SPCPS.api_version, "kind": SPCPS.kind, "name": name, "uid": uid}]

    @contextlib.asynccontextmanager
    async def _locked(self, namespace: str, name: str) -> AsyncIterator[None]:
        """Serialise our own writes of one Secret (two volumes of one SPC sync it concurrently)."""
        key = (namespace, name)
        entry = self._locks.setdefault(key, _SharedLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    async def _apply(
        self,
        secrets: Informer,
        namespace: str,
        spc: SecretProviderClass,
        obj: SecretObject,
        desired: DesiredSecret,
        owners: list[dict[str, str]],
        provider: str,
    ) -> Verdict:
        """Create or update one Secret when `judge` allows it; no request when it already matches."""
        started = time.monotonic()
        where = f"{namespace}/{desired.name}"
        async with self._locked(namespace, desired.name):
            existing = await self._cached(secrets, namespace, desired.name)
            if existing is None and not secrets.synced:
                existing = await self._get_secret(namespace, desired.name)
            keep: list[Any] = []  # owners of a Secret deleted for recreation
            for _ in range(WRITE_ATTEMPTS):
                # Judged before every write: the Secret may have changed hands since it was read.
                verdict = await judge(existing, namespace, spc, obj, self._lookup)
                if verdict.kind != "apply":
                    return verdict
                wanted = replace(desired, annotations={**desired.annotations, **verdict.annotations})
                try:
                    if existing is None:
                        written = await self._api.create(
                            SECRET, new_object(namespace, wanted, merge_owners(keep, owners)), namespace
                        )
                        action = "recreated" if keep else "created"
                    elif up_to_date(existing, wanted, owners):
                        secrets.upsert_local(existing)
                        return verdict
                    elif needs_recreate(existing, wanted):
                        log.info(
                            "secret type changed and is immutable: deleting and recreating it, owners kept",
                            extra={"secret": where, "old_type": _type_of(existing), "new_type": wanted.type},
                        )
                        meta = _meta(existing)
                        keep = merge_owners(keep, owner_refs(meta.get("ownerReferences") or []))
                        # uid + resourceVersion: only the managed Secret just judged is deleted
                        preconditions = {
                            "uid": str(meta.get("uid")),
                            "resourceVersion": str(meta.get("resourceVersion")),
                        }
                        with contextlib.suppress(ApiError):  # 404: already gone; 409: re-read below
                            await self._api.delete(
                                SECRET, desired.name, namespace, preconditions=preconditions
                            )
                        existing = await self._get_secret(namespace, desired.name)
                        continue
                    else:
                        body = updated_object(existing, wanted, owners)
                        written = await self._api.replace(SECRET, body, namespace)
                        action = "updated"
                except ApiError as err:
                    if err.already_exists or err.conflict or err.not_found:
                        existing = await self._get_secret(namespace, desired.name)
                        continue
                    raise
                secrets.upsert_local(written)
                self._metrics.sync_k8s_secret.labels(provider, OS_TYPE).inc()
                self._metrics.k8s_secret_duration.labels(OS_TYPE).observe(time.monotonic() - started)
                log.info(
                    "secret synced",
                    extra={
                        "secret": where,
                        "action": action,
                        "type": wanted.type,
                        "keys": ",".join(sorted(wanted.data)),  # key names only, never values
                    },
                )
                if wanted.type not in DOCUMENTED_TYPES:
                    log.info(
                        "secret type is not a documented one; passed through as is", extra={"secret": where}
                    )
                return verdict
        raise SyncError(f"Secret {where} kept changing; gave up after {WRITE_ATTEMPTS} attempts")

    async def _get_spc(self, namespace: str, name: str) -> SecretProviderClass | None:
        try:
            return SecretProviderClass.from_dict(await self._api.get(SPC, name, namespace))
        except ApiError as err:
            if err.not_found:
                return None
            raise

    async def _get_secret(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self._api.get(SECRET, name, namespace)
        except ApiError as err:
            if err.not_found:
                return None
            raise

    # -- reporting --

    def _report(
        self,
        state: VolumeState,
        spc: SecretProviderClass,
        secret_name: str,
        message: str,
        err: ApiError | None = None,
    ) -> None:
        forbidden = err is not None and err.status == 403
        what = f"Secret {secret_name}" if secret_name else "a Secret"
        text = f"failed to sync {what} of SecretProviderClass {spc.name}: {message}"
        if forbidden:
            text += f" ({FORBIDDEN_HINT})"
        log.warning(
            "secret sync failed",
            extra={"pod": _who(state.pod), "spc": spc.name, "secret": secret_name, "error": message}
            | ({"hint": FORBIDDEN_HINT} if forbidden else {}),
        )
        self._events.pod_event(state.pod, WARNING, FAILED_REASON, text)

    def _refuse(self, state: VolumeState, spc: SecretProviderClass, secret: str, verdict: Verdict) -> None:
        """Not synced on purpose: one Warning event per volume and Secret, and the gauge."""
        pod = state.pod
        if not self._refusals.refuse(state.target, pod.namespace, secret, spc.name, verdict.kind):
            return
        message = refusal_message(pod.namespace, secret, spc.name, verdict)
        log.warning(
            "secret not synced",
            extra={
                "pod": _who(pod),
                "spc": spc.name,
                "secret": secret,
                "reason": verdict.kind,
                "owner_spc": verdict.owner,
            },
        )
        self._events.pod_event(pod, WARNING, REFUSED_REASON, message)

    def _report_all(
        self, state: VolumeState, spc: SecretProviderClass, message: str, err: ApiError | None = None
    ) -> None:
        names = sorted({obj.secret_name.strip() for obj in spc.secret_objects} - {""})
        self._report(state, spc, ", ".join(names), message, err)


def _who(pod: PodRef) -> str:
    return f"{pod.namespace}/{pod.name}"
