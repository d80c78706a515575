"""Make the cluster match the rendered objects: apply, prune what is no longer wanted, remove all."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sscsi_kube import ApiError, Applied, KubeClient, Obj, Resource

from .kinds import (
    CHILD_KINDS,
    CSI_DRIVER,
    DAEMON_SET,
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    kind_of,
)
from .names import FIELD_MANAGER, MANAGED_SELECTOR

STATIC_RESOURCES = "StaticResources"
NODE_SERVICE = "NodeService"


@dataclass(frozen=True, order=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectKey:
        metadata = obj["metadata"]
        return cls(obj["kind"], metadata.get("namespace") or "", metadata["name"])

    @property
    def component(self) -> str:
        """Which status component an object belongs to: the DaemonSet, or everything else."""
        return NODE_SERVICE if self.kind == DAEMON_SET.kind else STATIC_RESOURCES

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Change:
    verb: str  # created, updated, recreated, deleted
    key: ObjectKey

    def __str__(self) -> str:
        return f"{self.verb} {self.key}"


@dataclass(frozen=True)
class Failure:
    key: ObjectKey
    action: str  # apply, delete, reconcile
    message: str

    def __str__(self) -> str:
        return f"{self.action} {self.key}: {self.message}"


@dataclass
class ApplyResult:
    """What one apply, prune or removal pass over the child objects changed, and what failed."""

    changes: list[Change] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # Objects still present after a removal pass.
    remaining: list[ObjectKey] = field(default_factory=list)

    def extend(self, other: ApplyResult) -> None:
        self.changes += other.changes
        self.failures += other.failures
        self.remaining += other.remaining


def child_kinds(
    service_monitors: bool, prometheus_rules: bool = False, admission_policies: bool = False
) -> tuple[Resource, ...]:
    """The child kinds, without the optional ones the cluster does not serve (the monitoring CRDs;
    ValidatingAdmissionPolicies before Kubernetes 1.30)."""
    absent = {SERVICE_MONITOR} if not service_monitors else set()
    absent |= {PROMETHEUS_RULE} if not prometheus_rules else set()
    absent |= (
        set() if admission_policies else {VALIDATING_ADMISSION_POLICY, VALIDATING_ADMISSION_POLICY_BINDING}
    )
    return tuple(kind for kind in CHILD_KINDS if kind not in absent)


async def observe(client: KubeClient, namespace: str, kinds: Iterable[Resource]) -> dict[ObjectKey, Obj]:
    """The children that exist now, found by the operator's label."""
    live: dict[ObjectKey, Obj] = {}
    for kind in kinds:
        listing = await client.list_all(kind, namespace if kind.namespaced else None, labels=MANAGED_SELECTOR)
        for obj in listing.items:
            live[ObjectKey.of(obj)] = obj
    return live


async def apply_all(client: KubeClient, desired: Sequence[Obj], live: Mapping[ObjectKey, Obj]) -> ApplyResult:
    result = ApplyResult()
    for manifest in desired:
        key = ObjectKey.of(manifest)
        try:
            applied = await _apply(client, manifest)
        except ApiError as err:
            if not (err.immutable_field and kind_of(manifest) is CSI_DRIVER):
                result.failures.append(Failure(key, "apply", err.message))
                continue
            # attachRequired and volumeLifecycleModes cannot change in place: replace the object.
            try:
                await _delete_one(client, CSI_DRIVER, key.name, None)
                applied = await _apply(client, manifest)
            except ApiError as retry_err:
                result.failures.append(Failure(key, "apply", retry_err.message))
                continue
            result.changes.append(Change("recreated", key))
            continue
        if applied.created:
            result.changes.append(Change("created", key))
        elif _content(live.get(key)) != _content(applied.obj):
            result.changes.append(Change("updated", key))
    return result


async def prune(client: KubeClient, desired: Sequence[Obj], live: Mapping[ObjectKey, Obj]) -> ApplyResult:
    """Delete the children that carry the operator's label but are no longer rendered."""
    wanted = {ObjectKey.of(manifest) for manifest in desired}
    stale = [obj for key, obj in live.items() if key not in wanted]
    return await _delete(client, stale)


async def remove_all(
    client: KubeClient,
    namespace: str,
    kinds: Sequence[Resource],
    candidates: Sequence[Obj],
    owner_uid: str | None,
) -> ApplyResult:
    """Delete every child: those labelled as ours, and the rendered names we own but that lost the label.

    `remaining` lists what still exists afterwards (e.g. held by someone else's finalizer).
    """
    live = await observe(client, namespace, kinds)
    for candidate in candidates:
        key = ObjectKey.of(candidate)
        if key in live:
            continue
        kind = kind_of(candidate)
        if kind not in kinds:
            continue
        obj = await client.find(kind, key.name, key.namespace or None)
        if obj is not None and owner_uid is not None and _owned_by(obj, owner_uid):
            obj.setdefault("apiVersion", kind.api_version)
            obj.setdefault("kind", kind.kind)
            live[key] = obj
    order = {kind.kind: index for index, kind in enumerate(kinds)}
    doomed = sorted(live.values(), key=lambda obj: order[obj["kind"]], reverse=True)
    result = await _delete(client, doomed)
    for key, obj in sorted(live.items()):
        if await client.find(kind_of(obj), key.name, key.namespace or None) is not None:
            result.remaining.append(key)
    return result


async def _delete(client: KubeClient, objs: Iterable[Obj]) -> ApplyResult:
    result = ApplyResult()
    for obj in objs:
        key = ObjectKey.of(obj)
        try:
            if await _delete_one(client, kind_of(obj), key.name, key.namespace or None):
                result.changes.append(Change("deleted", key))
        except ApiError as err:
            result.failures.append(Failure(key, "delete", err.message))
    return result


async def _apply(client: KubeClient, manifest: Obj) -> Applied:
    """Server-side apply with the operator's field manager, taking over conflicting fields."""
    return await client.apply(kind_of(manifest), manifest, field_manager=FIELD_MANAGER, force=True)


async def _delete_one(client: KubeClient, kind: Resource, name: str, namespace: str | None) -> bool:
    """Delete in the background (dependents such as pods go via the garbage collector).

    False when the object was already gone.
    """
    return await client.delete(kind, name, namespace, propagation="Background", missing_ok=True)


def _content(obj: Mapping[str, Any] | None) -> Any:
    """What an apply can change; a new resourceVersion alone may just be a status update by a controller."""
    if obj is None:
        return None
    metadata = {
        name: value
        for name, value in obj.get("metadata", {}).items()
        if name not in ("resourceVersion", "managedFields", "generation")
    }
    return {**{name: value for name, value in obj.items() if name != "status"}, "metadata": metadata}


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])
