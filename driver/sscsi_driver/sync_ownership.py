"""Which Secrets secret sync may write, and which SecretProviderClass's definition wins.

Two rules keep the driver from being a confused deputy for whoever can create a pod and a
SecretProviderClass in a namespace:

- **Only Secrets the driver created.** A Secret is the driver's when it carries the label
  `secrets-store.csi.k8s.io/managed=true` (set on every Secret the driver creates, and by upstream's
  driver, whose Secrets thus carry over). An existing Secret without it is never written, labelled,
  given owners or deleted: the pod still mounts, a Warning event and the
  `sync_k8s_secret_refused` gauge name it. Its owner hands it over explicitly by adding the label.
- **One definition per Secret.** The SecretProviderClass that created a Secret owns it; the Secret
  records it in the annotations `secrets-store.csi.k8s.io/owner-spc` and `.../definition` (a hash of
  the secretObjects entry, provider and parameters). Another SPC whose definition differs is not
  applied (Warning event naming both). Identical definitions share the Secret. Judging definitions,
  not contents, means rotation lag between two pods never reads as a conflict. When the owning SPC
  is gone or no longer lists the Secret, the next SPC that does takes it over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import Gauge
from sscsi_kube import Obj

from .models import MANAGED_LABEL, SecretObject, SecretProviderClass

OWNER_ANNOTATION = "secrets-store.csi.k8s.io/owner-spc"
DEFINITION_ANNOTATION = "secrets-store.csi.k8s.io/definition"
RESERVED_ANNOTATIONS = frozenset({OWNER_ANNOTATION, DEFINITION_ANNOTATION})
REFUSED_REASON = "SecretSyncRefused"

Lookup = Callable[[str, str], Awaitable[SecretProviderClass | None]]
Kind = Literal["apply", "unmanaged", "conflict", "stale"]


def definition_hash(spc: SecretProviderClass, obj: SecretObject) -> str:
    """What a Secret is made of: the secretObjects entry, the provider and its parameters."""
    doc = {
        "provider": spc.provider,
        "parameters": spc.parameters,
        "secretName": obj.secret_name.strip(),
        "type": obj.type.strip(),
        "labels": obj.labels,
        "annotations": {k: v for k, v in obj.annotations.items() if k not in RESERVED_ANNOTATIONS},
        "data": sorted((ref.object_name.strip(), ref.key.strip()) for ref in obj.data),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def is_managed(secret: Obj) -> bool:
    labels: Mapping[str, Any] = (secret.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_LABEL) == "true"


def _annotations(secret: Obj) -> Mapping[str, Any]:
    result: Mapping[str, Any] = (secret.get("metadata") or {}).get("annotations") or {}
    return result


def _entry(spc: SecretProviderClass | None, secret_name: str) -> SecretObject | None:
    if spc is None:
        return None
    for obj in spc.secret_objects:
        if obj.secret_name.strip() == secret_name:
            return obj
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    annotations: dict[str, str] = field(default_factory=dict)  # ownership annotations to write
    owner: str = ""  # the SPC that owns the Secret (conflict)


async def judge(
    existing: Obj | None, namespace: str, spc: SecretProviderClass, obj: SecretObject, lookup: Lookup
) -> Verdict:
    """May `spc`'s secretObject `obj` write `existing` (None: it does not exist) in `namespace`?

    Lookups of an SPC (in the pod's namespace only) happen only when the recorded definition
    differs from ours.
    """
    name = obj.secret_name.strip()
    mine = definition_hash(spc, obj)
    claim = {OWNER_ANNOTATION: spc.name, DEFINITION_ANNOTATION: mine}
    if existing is None:
        return Verdict("apply", claim)
    if not is_managed(existing):
        return Verdict("unmanaged")
    annotations = _annotations(existing)
    owner = str(annotations.get(OWNER_ANNOTATION) or "")
    recorded = str(annotations.get(DEFINITION_ANNOTATION) or "")
    if not owner:  # created by upstream's driver, an older version, or handed over by its owner
        return Verdict("apply", claim)
    if recorded == mine:
        return Verdict("apply", claim if owner == spc.name else {})
    current = await lookup(namespace, owner)
    entry = _entry(current, name)
    if owner == spc.name:
        if current is not None and entry is not None and definition_hash(current, entry) != mine:
            return Verdict("stale")  # this volume was synced from an older version of the SPC
        return Verdict("apply", claim)  # the owning SPC was edited
    if current is None or entry is None:
        return Verdict("apply", claim)  # the owner is gone or no longer defines this Secret
    if definition_hash(current, entry) == mine:
        return Verdict("apply")
    return Verdict("conflict", owner=owner)


def refusal_message(namespace: str, secret: str, spc: str, verdict: Verdict) -> str:
    """The event text: which Secret, why, and what to do. Never any Secret content."""
    where = f"Secret {namespace}/{secret}"
    if verdict.kind == "unmanaged":
        return (
            f"{where} was not synced from SecretProviderClass {spc}: it exists and was not created by "
            f"the driver (no label {MANAGED_LABEL}=true), so it is left untouched; the volume is "
            f"mounted. To hand it over, its owner runs: kubectl label secret {secret} -n {namespace} "
            f"{MANAGED_LABEL}=true (the driver then writes its data and owner references, and garbage "
            f"collection deletes it after the last pod using it)"
        )
    return (
        f"{where} was not synced from SecretProviderClass {spc}: SecretProviderClass {verdict.owner} "
        f"owns it with a different definition (secretObjects entry, provider or parameters), so "
        f"{spc}'s definition is not applied; the volume is mounted. Use another secretName or make "
        f"both definitions identical"
    )


class Refusals:
    """Secrets not synced on purpose, per volume: one event each, and a gauge while it lasts.

    `sync_k8s_secret_refused{namespace, secret, secret_provider_class, reason}` is the number of
    mounted volumes whose Secret is refused.
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._active: dict[tuple[str, str], tuple[str, str, str, str]] = {}  # (target, secret) -> labels

    def refuse(self, target: str, namespace: str, secret: str, spc: str, reason: str) -> bool:
        """Record it; True when it is new for this volume (post the event then)."""
        labels = (namespace, secret, spc, reason)
        previous = self._active.pop((target, secret), None)
        if previous == labels:
            self._active[(target, secret)] = labels
            return False
        if previous is not None:
            self._drop(previous)
        self._active[(target, secret)] = labels
        self._gauge.labels(*labels).inc()
        return True

    def clear(self, target: str, secret: str) -> None:
        labels = self._active.pop((target, secret), None)
        if labels is not None:
            self._drop(labels)

    def forget(self, target: str) -> None:
        for key in [k for k in self._active if k[0] == target]:
            self.clear(*key)

    def _drop(self, labels: tuple[str, str, str, str]) -> None:
        """`labels` was just removed from one volume."""
        if labels in self._active.values():
            self._gauge.labels(*labels).dec()
        else:
            self._gauge.remove(*labels)

    def __len__(self) -> int:
        return len(self._active)
