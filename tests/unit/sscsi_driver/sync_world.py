"""SecretSyncer's world for unit tests: an in-memory apiserver (FakeApi), pods, volumes, small builders."""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sscsi_driver import atomic_writer
from sscsi_driver.metrics import Metrics
from sscsi_driver.models import (
    NODE_LABEL,
    PodRef,
    SecretKeyRef,
    SecretObject,
    SecretProviderClass,
)
from sscsi_driver.node_pods import node_pods
from sscsi_driver.secret_sync import (
    SecretSyncer,
)
from sscsi_driver.volumes import VolumeState
from sscsi_kube import ApiError, EventRecorder, Informer, NamespacedCache, Obj, Resource
from sscsi_kube.resources import POD, SECRET, SPC, SPCPS

NODE = "node-a"
NS = "app"
PLANTED = b"planted-value-5e3c7"  # must never show up in logs or events


class FakeApi:
    """Enough of the apiserver for the syncer: CRUD with uids, resourceVersions, conflicts, selectors."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str, str], Obj] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.failures: dict[tuple[str, str], list[ApiError]] = {}
        self.before_replace: Callable[[FakeApi, Obj], None] | None = None
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)
        self._watchers: list[tuple[str, dict[str, str], asyncio.Queue[tuple[str, Obj]]]] = []
        self.watch_list = False  # an apiserver without WatchList: informers list, then watch

    def _notify(self, kind: str, plural: str, obj: Obj) -> None:
        for watched, labels, queue in self._watchers:
            obj_labels = obj["metadata"].get("labels") or {}
            if watched == plural and all(obj_labels.get(k) == v for k, v in labels.items()):
                queue.put_nowait((kind, copy.deepcopy(obj)))

    # helpers for tests
    def put(self, res: Resource, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta["resourceVersion"] = str(next(self._rv))
        if res is SECRET:
            obj.setdefault("type", "Opaque")
        self.store[(res.plural, meta.get("namespace", ""), meta["name"])] = obj
        self._notify("MODIFIED", res.plural, obj)
        return copy.deepcopy(obj)

    def secret(self, name: str, namespace: str = NS) -> Obj:
        return self.store[("secrets", namespace, name)]

    def writes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] in ("create", "replace", "delete") and c[1] != "events"]

    def _fail(self, verb: str, res: Resource) -> None:
        queue = self.failures.get((verb, res.plural))
        if queue:
            raise queue.pop(0)

    def _not_found(self, res: Resource, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{res.plural} "{name}" not found')

    # the KubeClient surface used by the syncer, Informer and EventRecorder
    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj:
        self.calls.append(("get", res.plural, name))
        self._fail("get", res)
        try:
            return copy.deepcopy(self.store[(res.plural, namespace or "", name)])
        except KeyError:
            raise self._not_found(res, name) from None

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        labels: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
    ) -> Obj:
        self.calls.append(("list", res.plural, ""))
        self._fail("list", res)
        items = []
        for (plural, ns, _), obj in self.store.items():
            if plural != res.plural or (namespace and ns != namespace):
                continue
            obj_labels = obj["metadata"].get("labels") or {}
            if any(obj_labels.get(k) != v for k, v in (labels or {}).items()):
                continue
            if fields and (obj.get("spec") or {}).get("nodeName") != fields.get("spec.nodeName"):
                continue
            items.append(copy.deepcopy(obj))
        return {"metadata": {"resourceVersion": "99"}, "items": items}

    async def watch(
        self, res: Resource, namespace: str | None, rv: str, *, labels: Any = None, **kw: Any
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Changes made through put()/create()/replace()/delete(); direct store edits are not seen."""
        entry: tuple[str, dict[str, str], asyncio.Queue[tuple[str, Obj]]] = (
            res.plural,
            dict(labels or {}),
            asyncio.Queue(),
        )
        self._watchers.append(entry)
        try:
            while True:
                yield await entry[2].get()
        finally:
            self._watchers.remove(entry)

    async def create(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        name = obj["metadata"].get("name") or f"{obj['metadata'].get('generateName', 'x')}{next(self._uid)}"
        self.calls.append(("create", res.plural, name))
        self._fail("create", res)
        if (res.plural, namespace or "", name) in self.store:
            raise ApiError(409, "AlreadyExists", f'{res.plural} "{name}" already exists')
        obj = copy.deepcopy(obj)
        obj["metadata"].update(name=name, namespace=namespace or "")
        obj["metadata"].pop("uid", None)
        return self.put(res, obj)

    async def replace(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        name = obj["metadata"]["name"]
        self.calls.append(("replace", res.plural, name))
        if self.before_replace is not None:
            hook, self.before_replace = self.before_replace, None
            hook(self, obj)
        self._fail("replace", res)
        key = (res.plural, namespace or "", name)
        current = self.store.get(key)
        if current is None:
            raise self._not_found(res, name)
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        if res is SECRET and obj.get("type") != current.get("type"):
            raise ApiError(422, "Invalid", "type: Invalid value: field is immutable")
        obj = copy.deepcopy(obj)
        obj["metadata"]["uid"] = current["metadata"]["uid"]
        return self.put(res, obj)

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: dict[str, str] | None = None,
    ) -> None:
        self.calls.append(("delete", res.plural, name))
        key = (res.plural, namespace or "", name)
        current = self.store.get(key)
        if current is None:
            raise self._not_found(res, name)
        for field_name, value in (preconditions or {}).items():
            if current["metadata"].get(field_name) != value:
                raise ApiError(409, "Conflict", f"precondition failed: {field_name}")
        del self.store[key]
        self._notify("DELETED", res.plural, current)


def rs_owner(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": name,
        "uid": f"rs-uid-{name}",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def ref_of(owner: dict[str, Any]) -> dict[str, str]:
    return {k: owner[k] for k in ("apiVersion", "kind", "name", "uid")}


class World:
    def __init__(self, tmp_path: Path, resync_interval: float = 0.0) -> None:
        self.tmp = tmp_path
        self.api = FakeApi()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.events = EventRecorder(self.api, "test", NODE)  # type: ignore[arg-type]
        self.spcps = Informer(self.api, SPCPS, labels={NODE_LABEL: NODE})  # type: ignore[arg-type]
        self.mounted: set[str] = set()
        self.spcs = NamespacedCache(self.api, SPC)  # type: ignore[arg-type]
        self.pods = node_pods(self.api, NODE, "secrets-store.csi.k8s.io", self.spcs)  # type: ignore[arg-type]
        self.pods.start()  # as main does: the node's pod cache starts with the driver
        self.syncer = SecretSyncer(
            self.api,  # type: ignore[arg-type]
            pods=self.pods,
            spcps=self.spcps,
            events=self.events,
            metrics=self.metrics,
            is_mounted=lambda t: t in self.mounted,
            retry_initial=0.05,
            retry_max=0.2,
            cache_timeout=2.0,
            resync_interval=resync_interval,
        )

    async def stop(self) -> None:
        await self.syncer.stop()
        await self.pods.stop()
        await self.spcs.stop()
        await self.events.drain()

    def pod(self, name: str, owners: list[dict[str, Any]] | None = None) -> PodRef:
        meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"pod-uid-{name}"}
        if owners:
            meta["ownerReferences"] = owners
        self.api.put(POD, {"metadata": meta, "spec": {"nodeName": NODE}})
        return PodRef(NS, name, f"pod-uid-{name}", "default")

    def volume(self, pod: PodRef, files: dict[str, bytes], spc: str = "spc") -> VolumeState:
        target = self.tmp / pod.name / "mount"
        target.mkdir(parents=True, exist_ok=True)
        self.write(target, files)
        self.mounted.add(str(target))
        return VolumeState(str(target), pod, spc, "e2e-provider", 1)

    @staticmethod
    def write(target: Path, files: dict[str, bytes]) -> None:
        atomic_writer.write_payloads(
            target, [atomic_writer.Payload(path, 0o644, data) for path, data in files.items()]
        )

    async def events_posted(self) -> list[Obj]:
        await self.events.drain()
        return [o for (plural, _, _), o in self.api.store.items() if plural == "events"]

    def synced_total(self) -> float:
        value = self.registry.get_sample_value(
            "sync_k8s_secret_total", {"provider": "e2e-provider", "os_type": "linux"}
        )
        return value or 0.0


async def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    assert check()


def spc(*objects: SecretObject, name: str = "spc") -> SecretProviderClass:
    return SecretProviderClass(NS, name, "spc-uid", 1, "e2e-provider", {"objects": "x"}, tuple(objects))


def opaque(name: str = "foosecret", *refs: tuple[str, str], **kw: Any) -> SecretObject:
    data = tuple(SecretKeyRef(o, k) for o, k in (refs or (("foo", "username"),)))
    return SecretObject(name, kw.pop("type", "Opaque"), data=data, **kw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
