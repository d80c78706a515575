"""Typed views of the objects the driver reads, validated from raw API dicts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

NODE_LABEL = "internal.secrets-store.csi.k8s.io/node-name"
MANAGED_LABEL = "secrets-store.csi.k8s.io/managed"

# A DNS-1123 subdomain: what the apiserver accepts as the name of a Secret or SecretProviderClass.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def valid_object_name(name: str) -> bool:
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


# Volume-context keys kubelet passes with podInfoOnMount.
POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SERVICE_ACCOUNT = "csi.storage.k8s.io/serviceAccount.name"
SA_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
SPC_ATTRIBUTE = "secretProviderClass"
PROVIDER_ATTRIBUTE = "providerName"


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    object_name: str
    key: str


@dataclass(frozen=True, slots=True)
class SecretObject:
    secret_name: str
    type: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    data: tuple[SecretKeyRef, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretProviderClass:
    namespace: str
    name: str
    uid: str
    generation: int
    provider: str
    parameters: dict[str, str]
    secret_objects: tuple[SecretObject, ...]

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> SecretProviderClass:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        objects = tuple(
            SecretObject(
                secret_name=str(so.get("secretName") or ""),
                type=str(so.get("type") or ""),
                labels={str(k): str(v) for k, v in (so.get("labels") or {}).items()},
                annotations={str(k): str(v) for k, v in (so.get("annotations") or {}).items()},
                data=tuple(
                    SecretKeyRef(str(d.get("objectName") or ""), str(d.get("key") or ""))
                    for d in (so.get("data") or [])
                ),
            )
            for so in (spec.get("secretObjects") or [])
        )
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            provider=str(spec.get("provider") or ""),
            parameters={str(k): str(v) for k, v in (spec.get("parameters") or {}).items()},
            secret_objects=objects,
        )


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    service_account: str = ""


def spcps_name(pod_name: str, namespace: str, spc_name: str) -> str:
    """Upstream's naming: plain concatenation, no hashing."""
    return f"{pod_name}-{namespace}-{spc_name}"
