"""Restart on rotation: rolling restarts of opted-in workloads whose pods' mounted secrets changed.

Runs in the operator (a kopf daemon on the ClusterCSIDriver, so only the active peer runs it and it
stops with the driver), never in the node plugin: the rights to patch workloads stay off the nodes.

It watches SecretProviderClassPodStatuses cluster-wide (read-only; the driver writes them with the
versions of each mounted object). When a status's versions change, it follows that status's pod (the
pod the status is owned by, same uid, same namespace) to the workload that controls it
(ReplicaSet -> Deployment, StatefulSet, DaemonSet). Only a workload with the annotation
`secrets-store.csi.k8s.io/restart-on-rotation: "true"` is considered; restart_policy decides when.
A restart is what `kubectl rollout restart` does: the pod template's `kubectl.kubernetes.io/restartedAt`
annotation, patched with the resourceVersion just read (the opt-in is checked on that same read), and
a Normal Event `SecretRotationRestart` on the workload naming the SPC, the objects and the versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sscsi_kube import ApiError, KubeClient, Obj, Resource, event_body, involved_object, post_event
from sscsi_kube.resources import DAEMON_SET, DEPLOYMENT, POD, REPLICA_SET, SPCPS, STATEFUL_SET

from .names import OPERATOR_NAME
from .restart_policy import (
    EVENT_REASON,
    RESTART_ANNOTATION,
    RESTARTED_AT_ANNOTATION,
    PlannedRestart,
    RestartPlanner,
    Workload,
    version_changes,
)
from .spec import OperatorSpec, SpecError, parse_spec

log = logging.getLogger(__name__)

WORKLOAD_KINDS = {kind.kind: kind for kind in (DEPLOYMENT, STATEFUL_SET, DAEMON_SET)}

#: (apiGroup, resource, verbs, why): everything this module asks of the apiserver (the CSV holds it).
REQUIRED_GRANTS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (SPCPS.group, SPCPS.plural, ("list", "watch"), "restart on rotation: mounted object versions"),
    ("", "pods", ("get",), "restart on rotation: the pod a changed status belongs to, and its owner"),
    ("apps", "replicasets", ("get",), "restart on rotation: a pod's ReplicaSet leads to its Deployment"),
    ("apps", "deployments", ("get", "patch"), "restart on rotation: opt-in read, restartedAt patched"),
    ("apps", "statefulsets", ("get", "patch"), "restart on rotation: opt-in read, restartedAt patched"),
    ("apps", "daemonsets", ("get", "patch"), "restart on rotation: opt-in read, restartedAt patched"),
    ("", "events", ("create",), "restart on rotation: an Event on the restarted workload"),
)

TICK_SECONDS = 1.0
WATCH_TIMEOUT_SECONDS = 300
RELIST_DELAY_SECONDS = 5.0


@dataclass(frozen=True)
class RestartConfig:
    enabled: bool
    window_seconds: float
    minimum_interval_seconds: float

    @classmethod
    def of(cls, spec: OperatorSpec) -> RestartConfig:
        driver = spec.driver
        return cls(
            enabled=driver.restart_on_rotation and driver.rotation_enabled,
            window_seconds=float(driver.rotation_interval_seconds),
            minimum_interval_seconds=float(driver.restart_minimum_interval_seconds),
        )

    @classmethod
    def of_body(cls, body: Any) -> RestartConfig:
        """From the ClusterCSIDriver; an unusable spec turns the feature off."""
        try:
            spec = parse_spec(body.get("spec") if body else None)
        except SpecError:
            return cls(False, 0.0, 0.0)
        if spec.management_state.value == "Removed":
            return cls(False, 0.0, 0.0)
        return cls.of(spec)


async def patch_restarted_at(client: KubeClient, kind: Resource, obj: Obj, stamp: str) -> None:
    """What `kubectl rollout restart` does, on the resourceVersion just read (a change since fails: 409)."""
    meta = obj["metadata"]
    patch = {
        "metadata": {"resourceVersion": meta["resourceVersion"]},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}},
    }
    await client.merge_patch(kind, meta["name"], patch, meta["namespace"])


async def workload_event(client: KubeClient, kind: Resource, obj: Obj, reason: str, message: str) -> None:
    involved = involved_object(obj, kind.api_version, kind.kind)
    await post_event(client, event_body(involved, "Normal", reason, message, component=OPERATOR_NAME))


def _versions(status_obj: Obj) -> dict[str, str]:
    objects = (status_obj.get("status") or {}).get("objects") or []
    return {str(o["id"]): str(o.get("version", "")) for o in objects if isinstance(o, dict) and o.get("id")}


def _controller(obj: Obj) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def opted_in(obj: Obj | None) -> bool:
    return (
        bool(obj)
        and ((obj or {}).get("metadata", {}).get("annotations") or {}).get(RESTART_ANNOTATION) == "true"
    )


class RestartController:
    def __init__(
        self,
        client: KubeClient,
        config: Callable[[], RestartConfig],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._config = config
        self._clock = clock
        self.planner = RestartPlanner()
        self._statuses: dict[tuple[str, str], dict[str, str]] = {}

    # ---- what the watch reports ----

    def seed(self, items: list[Obj]) -> None:
        """The statuses as listed: recorded, never a change (new pods and a starting operator)."""
        self._statuses = {}
        for item in items:
            meta = item.get("metadata") or {}
            self._statuses[(meta.get("namespace", ""), meta.get("name", ""))] = _versions(item)

    async def handle(self, event_type: str, obj: Obj) -> Workload | None:
        """One watch event; returns the workload a change was recorded for, if any."""
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._statuses.pop(key, None)
            return None
        if event_type not in ("ADDED", "MODIFIED"):
            return None
        new = _versions(obj)
        old = self._statuses.get(key)
        self._statuses[key] = new
        if old is None or event_type == "ADDED" or old == new:
            return None
        status = obj.get("status") or {}
        changes = version_changes(str(status.get("secretProviderClassName", "")), old, new)
        if not changes:
            return None
        pod_name = str(status.get("podName", ""))
        workload = await self._workload_of(key[0], pod_name, meta)
        if workload is None:
            return None
        if self.planner.observe(workload, pod_name, changes, self._clock()):
            log.info("Secret rotation seen for %s (pod %s); restart scheduled", workload, pod_name)
            return workload
        return None

    async def _workload_of(self, namespace: str, pod_name: str, status_meta: Obj) -> Workload | None:
        """The opted-in workload controlling the status's own pod, in the status's namespace."""
        if not pod_name:
            return None
        pod = await self._client.find(POD, pod_name, namespace)
        if pod is None:
            return None
        pod_uid = pod["metadata"].get("uid")
        owners = status_meta.get("ownerReferences") or []
        if not any(ref.get("kind") == "Pod" and ref.get("uid") == pod_uid for ref in owners):
            return None  # a status not written for this pod: not followed
        ref = _controller(pod)
        if ref is not None and ref.get("kind") == "ReplicaSet":
            replica_set = await self._client.find(REPLICA_SET, str(ref.get("name")), namespace)
            ref = _controller(replica_set) if replica_set else None
        if ref is None or ref.get("kind") not in WORKLOAD_KINDS or ref.get("apiVersion") != "apps/v1":
            return None
        kind = WORKLOAD_KINDS[str(ref["kind"])]
        workload = await self._client.find(kind, str(ref.get("name")), namespace)
        if not opted_in(workload) or (workload or {})["metadata"].get("uid") != ref.get("uid"):
            return None
        return Workload(namespace, kind.kind, str(ref["name"]))

    # ---- restarts ----

    async def flush(self) -> list[PlannedRestart]:
        """Make every restart that is due; returns those made."""
        config = self._config()
        if not config.enabled:
            for workload in self.planner.pending():
                self.planner.dropped(workload)
            return []
        self.planner.window_seconds = config.window_seconds
        self.planner.minimum_interval_seconds = config.minimum_interval_seconds
        made: list[PlannedRestart] = []
        for plan in self.planner.due(self._clock()):
            try:
                if await self._restart(plan):
                    made.append(plan)
                    self.planner.restarted(plan, self._clock())
                else:
                    self.planner.dropped(plan.workload)
            except ApiError as err:
                log.warning("Restart of %s failed, retried at the next tick: %s", plan.workload, err.message)
        return made

    async def _restart(self, plan: PlannedRestart) -> bool:
        kind = WORKLOAD_KINDS[plan.workload.kind]
        obj = await self._client.find(kind, plan.workload.name, plan.workload.namespace)
        if not opted_in(obj) or obj is None:
            log.info("%s is gone or no longer opted in: no restart", plan.workload)
            return False
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await patch_restarted_at(self._client, kind, obj, stamp)
        message = plan.message()
        log.info("Restarted %s: %s", plan.workload, message)
        with contextlib.suppress(ApiError):
            await workload_event(self._client, kind, obj, EVENT_REASON, message)
        return True

    # ---- the loops ----

    async def run(self) -> None:
        """Watch and restart until cancelled; idle (no watch) while the feature is off."""
        ticker = asyncio.create_task(self._tick())
        try:
            while True:
                if not self._config().enabled:
                    self._statuses = {}
                    await asyncio.sleep(TICK_SECONDS)
                    continue
                try:
                    await self._watch_once()
                except (ApiError, OSError, ValueError) as err:
                    log.warning("Watching SecretProviderClassPodStatuses failed, listing again: %s", err)
                    await asyncio.sleep(RELIST_DELAY_SECONDS)
                except Exception as err:  # httpx transport errors and the like: keep the feature alive
                    log.warning("Watch of SecretProviderClassPodStatuses broke, listing again: %r", err)
                    await asyncio.sleep(RELIST_DELAY_SECONDS)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _watch_once(self) -> None:
        listing = await self._client.list_all(SPCPS)
        self.seed(listing.items)
        version = listing.resource_version
        while self._config().enabled:
            events = self._client.watch(SPCPS, None, version, timeout_seconds=WATCH_TIMEOUT_SECONDS)
            try:
                async for kind, obj in events:
                    version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                    if kind != "BOOKMARK":
                        try:
                            await self.handle(kind, obj)
                        except ApiError as err:
                            log.warning("Could not follow a status change to its workload: %s", err.message)
                    if not self._config().enabled:
                        return
            except ApiError as err:
                if err.gone:
                    return  # the version expired: list again now
                raise

    async def _tick(self) -> None:
        while True:
            try:
                await self.flush()
            except Exception:
                log.exception("Restart pass failed")
            await asyncio.sleep(TICK_SECONDS)
