"""A cluster of recorded objects behind the CLI's `Cluster` seam, and the real node tier's healthy world.

`recorded/healthy.json` holds objects read with kubectl from the real node tier (operator, driver,
the two providers, an app pod whose volume syncs a Secret; Secret values removed). Edited since to
the driver registering itself: the node-driver-registrar container, its image and variables taken
out, the driver container given its registration flags, mount and /readyz probe. Scenarios
change one thing each, the way tests/node/test_node_doctor.py breaks the real node.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sscsi_cli.access import Forbidden, Kind, NotFound, Obj, describe

RECORDED = Path(__file__).resolve().parent / "recorded"

_PLURALS = {
    "Pod": "pods",
    "Node": "nodes",
    "Event": "events",
    "Secret": "secrets",
    "DaemonSet": "daemonsets",
    "Deployment": "deployments",
    "CSIDriver": "csidrivers",
    "CSINode": "csinodes",
    "SecretProviderClass": "secretproviderclasses",
    "SecretProviderClassPodStatus": "secretproviderclasspodstatuses",
    "ClusterCSIDriver": "clustercsidrivers",
}


def _field(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = (value or {}).get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _matches(obj: Obj, labels: str, fields: str) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, labels.split(",")):
        key, _, value = term.partition("=")
        if have.get(key) != value:
            return False
    for term in filter(None, fields.split(",")):
        key, _, value = term.partition("=")
        if _field(obj, key) != value:
            return False
    return True


@dataclass
class FakeCluster:
    """Objects by resource; `forbidden` holds (verb, plural, namespace): None forbids it everywhere,
    "" only across all namespaces (a namespace user's list of every pod)."""

    objects: list[Obj]
    forbidden: set[tuple[str, str, str | None]] = field(default_factory=set)
    metrics: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def _deny(self, verb: str, kind: Kind, namespace: str | None, name: str | None = None) -> None:
        self.calls.append(describe(verb, kind, namespace, name))
        for v, plural, ns in self.forbidden:
            where = ns is None or ns == namespace or (ns == "" and namespace is None)
            if v == verb and plural == kind.plural and where:
                raise Forbidden(describe(verb, kind, namespace, name))

    def _of(self, kind: Kind) -> list[Obj]:
        return [o for o in self.objects if _PLURALS[o["kind"]] == kind.plural]

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        self._deny("get", kind, namespace, name)
        for obj in self._of(kind):
            meta = obj["metadata"]
            if meta["name"] == name and (not kind.namespaced or meta.get("namespace") == namespace):
                return copy.deepcopy(obj)
        raise NotFound(describe("get", kind, namespace, name))

    async def list(
        self, kind: Kind, namespace: str | None = None, *, labels: str = "", fields: str = ""
    ) -> list[Obj]:
        self._deny("list", kind, namespace)
        return [
            copy.deepcopy(o)
            for o in self._of(kind)
            if (namespace is None or o["metadata"].get("namespace") == namespace)
            and _matches(o, labels, fields)
        ]

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str:
        self._deny("get", Kind("", "v1", "pods/proxy"), namespace, f"{pod}:{port}")
        if pod not in self.metrics:
            raise NotFound(pod)
        return self.metrics[pod]

    # ---- changes the scenarios make ----

    def find(self, kind: str, name: str | None = None, **labels: str) -> Obj:
        for obj in self.objects:
            meta = obj["metadata"]
            labelled = all((meta.get("labels") or {}).get(k) == v for k, v in labels.items())
            if obj["kind"] == kind and (name is None or meta["name"] == name) and labelled:
                return obj
        raise KeyError(f"{kind} {name} {labels}")

    def remove(self, kind: str, name: str | None = None, **labels: str) -> Obj:
        obj = self.find(kind, name, **labels)
        self.objects.remove(obj)
        return obj

    def add(self, obj: Obj) -> None:
        self.objects.append(obj)


def recorded(name: str = "healthy") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return doc


def healthy_cluster() -> tuple[FakeCluster, dict[str, Any]]:
    """The recorded world and its `about` (namespace, pod, node, SPC, Secret names)."""
    doc = recorded()
    return FakeCluster(doc["objects"], metrics=doc.get("metrics", {})), doc["about"]


def event(pod: Obj, reason: str, message: str, when: str, kind: str = "Warning") -> Obj:
    meta = pod["metadata"]
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": f"{meta['name']}.{reason}.{when}", "namespace": meta["namespace"]},
        "involvedObject": {
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "lastTimestamp": when,
        "count": 1,
    }
