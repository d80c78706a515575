"""Write one volume's Secrets: one pass over its SecretProviderClass's `secretObjects`.

A pass reads the pod and its owners, builds every desired Secret from the mounted files
(`secret_desired`) and writes each one the driver may write (`sync_ownership.judge`):

- created when missing, with the pod's owners (its ReplicaSet...) or, for a bare pod, its
  SecretProviderClassPodStatus;
- updated from the current object (optimistic, resourceVersion), so owners added by another
  node are never dropped; no request when it already matches;
- deleted and recreated, owners kept, when its `type` changed (immutable in the API).

Reads come from node-filtered watch caches the caller owns. A failure becomes a Warning event
`FailedToCreateSecret` on the pod and makes the pass return False (the caller retries); a refusal
becomes one `SecretSyncRefused` event per volume and Secret. Secret contents never reach a log
line or an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sscsi_kube import WARNING, ApiError, EventRecorder, Informer, KubeClient, Obj
from sscsi_kube.resources import POD, SECRET, SPC, SPCPS

from .keyed_lock import KeyedLock
from .metrics import OS_TYPE, Metrics
from .models import PodRef, SecretObject, SecretProviderClass, spcps_name
from .secret_desired import (
    TLS_TYPE,
    DesiredSecret,
    SyncError,
    build_all,
    merge_owners,
    meta_of,
    needs_recreate,
    new_object,
    owner_refs,
    type_of,
    up_to_date,
    updated_object,
)
from .sync_ownership import REFUSED_REASON, Lookup, Refusals, Verdict, judge, refusal_message
from .volumes import VolumeState

log = logging.getLogger("sscsi_driver.secret_sync")  # one logger name for all of secret sync

FAILED_REASON = "FailedToCreateSecret"
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
WRITE_ATTEMPTS = 5


class SecretWriter:
    """Creates, updates and recreates the Secrets of one volume per `write_volume` call."""

    def __init__(
        self,
        api: KubeClient,
        *,
        spcps: Informer,
        events: EventRecorder,
        metrics: Metrics,
        cache_timeout: float,
        lookup: Lookup | None = None,
    ) -> None:
        self._api = api
        self._spcps = spcps
        self._events = events
        self._metrics = metrics
        self._cache_timeout = cache_timeout
        self._lookup = lookup or self._get_spc
        self._refusals = Refusals(metrics.sync_k8s_secret_refused)
        # Our own writes of one Secret are serialised: two volumes of one SPC sync it concurrently.
        self._locks: KeyedLock[tuple[str, str]] = KeyedLock()

    def forget(self, target: str) -> None:
        """The volume no longer syncs: its refusals are no longer reported."""
        self._refusals.forget(target)

    # -- one pass over an SPC's secretObjects --

    async def write_volume(
        self, state: VolumeState, spc: SecretProviderClass, pods: Informer, secrets: Informer
    ) -> bool:
        """Make every Secret of `spc` match the volume's files; True when all of them do."""
        ref = state.pod
        try:
            pod = await self._pod(pods, ref)
        except ApiError as err:
            self.report_all(state, spc, f"cannot read pod {who(ref)}: {err}", err)
            return False
        if pod is None:
            log.info("pod is gone, secret sync skipped", extra={"pod": who(ref), "spc": spc.name})
            return True
        if meta_of(pod).get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in (
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
            self.report_all(state, spc, message, err if isinstance(err, ApiError) else None)
            return False

        results = await asyncio.to_thread(build_all, spc.secret_objects, Path(state.target))
        ok = True
        for obj, result in zip(spc.secret_objects, results, strict=True):
            secret_name = obj.secret_name.strip()
            if isinstance(result, SyncError):
                self.report(state, spc, secret_name, result.message)
                ok = False
                continue
            try:
                verdict = await self._write(secrets, ref.namespace, spc, obj, result, owners, state.provider)
                if verdict.kind in ("unmanaged", "conflict"):
                    self._refuse(state, spc, result.name, verdict)
                else:
                    self._refusals.clear(state.target, result.name)
            except SyncError as err:
                self.report(state, spc, secret_name, err.message)
                ok = False
            except ApiError as err:
                self.report(state, spc, secret_name, str(err), err)
                ok = False
            except Exception as err:  # transport errors (apiserver unreachable), bad JSON from a proxy
                self.report(state, spc, secret_name, f"request failed: {type(err).__name__}: {err}")
                ok = False
        return ok

    async def _pod(self, pods: Informer, ref: PodRef) -> Obj | None:
        """The pod from the node's pod cache; one GET on a miss. None when it no longer exists."""
        obj = await self._cached(pods, ref.namespace, ref.name)
        if obj is None or (ref.uid and meta_of(obj).get("uid") != ref.uid):
            try:
                obj = await self._api.get(POD, ref.name, ref.namespace)
            except ApiError as err:
                if err.not_found:
                    return None
                raise
        if ref.uid and meta_of(obj).get("uid") != ref.uid:
            return None  # a newer pod of the same name; this volume belongs to a deleted one
        return obj

    async def _cached(self, informer: Informer, namespace: str, name: str) -> Obj | None:
        try:
            await informer.wait_synced(self._cache_timeout)
        except TimeoutError:
            return None
        return informer.get(namespace, name)

    async def _owners(self, pod: Obj, ref: PodRef, spc_name: str) -> list[dict[str, str]]:
        owners = owner_refs(meta_of(pod).get("ownerReferences") or [])
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
        uid = str(meta_of(status).get("uid") or "")
        if not uid:
            raise SyncError(f"SecretProviderClassPodStatus {ref.namespace}/{name} has no uid")
        return [{"apiVersion": SPCPS.api_version, "kind": SPCPS.kind, "name": name, "uid": uid}]

    # -- one Secret --

    async def _write(
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
        async with self._locks.hold((namespace, desired.name)):
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
                if existing is not None and up_to_date(existing, wanted, owners):
                    secrets.upsert_local(existing)
                    return verdict
                try:
                    if existing is None:
                        body = new_object(namespace, wanted, merge_owners(keep, owners))
                        written = await self._api.create(SECRET, body, namespace)
                        action = "recreated" if keep else "created"
                    elif needs_recreate(existing, wanted):
                        keep = merge_owners(keep, owner_refs(meta_of(existing).get("ownerReferences") or []))
                        existing = await self._delete_for_recreate(existing, wanted, namespace)
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
                _log_written(where, action, wanted)
                return verdict
        raise SyncError(f"Secret {where} kept changing; gave up after {WRITE_ATTEMPTS} attempts")

    async def _delete_for_recreate(self, existing: Obj, wanted: DesiredSecret, namespace: str) -> Obj | None:
        """Delete the Secret just judged (its type cannot change in place); what is there afterwards."""
        meta = meta_of(existing)
        log.info(
            "secret type changed and is immutable: deleting and recreating it, owners kept",
            extra={
                "secret": f"{namespace}/{wanted.name}",
                "old_type": type_of(existing),
                "new_type": wanted.type,
            },
        )
        # uid + resourceVersion: only the managed Secret just judged is deleted
        preconditions = {"uid": str(meta.get("uid")), "resourceVersion": str(meta.get("resourceVersion"))}
        with contextlib.suppress(ApiError):  # 404: already gone; 409: re-read below
            await self._api.delete(SECRET, wanted.name, namespace, preconditions=preconditions)
        return await self._get_secret(namespace, wanted.name)

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

    def report(
        self,
        state: VolumeState,
        spc: SecretProviderClass,
        secret_name: str,
        message: str,
        err: ApiError | None = None,
    ) -> None:
        """A Warning event `FailedToCreateSecret` on the pod and a log line; `secret_name` may be ""."""
        forbidden = err is not None and err.status == 403
        what = f"Secret {secret_name}" if secret_name else "a Secret"
        text = f"failed to sync {what} of SecretProviderClass {spc.name}: {message}"
        if forbidden:
            text += f" ({FORBIDDEN_HINT})"
        log.warning(
            "secret sync failed",
            extra={"pod": who(state.pod), "spc": spc.name, "secret": secret_name, "error": message}
            | ({"hint": FORBIDDEN_HINT} if forbidden else {}),
        )
        self._events.pod_event(state.pod, WARNING, FAILED_REASON, text)

    def report_all(
        self, state: VolumeState, spc: SecretProviderClass, message: str, err: ApiError | None = None
    ) -> None:
        names = sorted({obj.secret_name.strip() for obj in spc.secret_objects} - {""})
        self.report(state, spc, ", ".join(names), message, err)

    def _refuse(self, state: VolumeState, spc: SecretProviderClass, secret: str, verdict: Verdict) -> None:
        """Not synced on purpose: one Warning event per volume and Secret, and the gauge."""
        pod = state.pod
        if not self._refusals.refuse(state.target, pod.namespace, secret, spc.name, verdict.kind):
            return
        message = refusal_message(pod.namespace, secret, spc.name, verdict)
        log.warning(
            "secret not synced",
            extra={
                "pod": who(pod),
                "spc": spc.name,
                "secret": secret,
                "reason": verdict.kind,
                "owner_spc": verdict.owner,
            },
        )
        self._events.pod_event(pod, WARNING, REFUSED_REASON, message)


def who(pod: PodRef) -> str:
    return f"{pod.namespace}/{pod.name}"


def _log_written(where: str, action: str, wanted: DesiredSecret) -> None:
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
        log.info("secret type is not a documented one; passed through as is", extra={"secret": where})
