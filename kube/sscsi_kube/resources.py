"""What the API serves: a resource (group, version, plural, kind, scope) and its URL paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

Obj = dict[str, Any]

# One URL path segment naming a namespace or an object. Without this check a name such as
# `../../other/secrets/x` (a pod author's volumeAttributes or secretObjects) would be
# normalised by the HTTP client into another namespace's URL.
_SEGMENT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,251}[A-Za-z0-9])?")


def _segment(what: str, value: str) -> str:
    if not _SEGMENT.fullmatch(value) or ".." in value:
        raise ApiError(400, "BadRequest", f"invalid {what} {value!r}: not a Kubernetes object name")
    return value


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_path(self) -> str:
        """The discovery document listing this group version's resources."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        """The URL path; `namespace=None` on a namespaced resource means all namespaces."""
        parts = [self.group_path]
        if self.namespaced and namespace is not None:
            parts += ["namespaces", _segment("namespace", namespace)]
        parts.append(self.plural)
        if name is not None:
            parts.append(_segment(f"{self.kind} name", name))
        if sub is not None:
            parts.append(sub)
        return "/".join(parts)


def object_key(obj: Obj) -> tuple[str, str]:
    """(namespace, name); the namespace is "" for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


# core
POD = Resource("", "v1", "pods", "Pod")
SECRET = Resource("", "v1", "secrets", "Secret")
EVENT = Resource("", "v1", "events", "Event")
SERVICE = Resource("", "v1", "services", "Service")
SERVICE_ACCOUNT = Resource("", "v1", "serviceaccounts", "ServiceAccount")
NAMESPACE = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
NODE = Resource("", "v1", "nodes", "Node", namespaced=False)
# apps
DAEMON_SET = Resource("apps", "v1", "daemonsets", "DaemonSet")
DEPLOYMENT = Resource("apps", "v1", "deployments", "Deployment")
REPLICA_SET = Resource("apps", "v1", "replicasets", "ReplicaSet")
STATEFUL_SET = Resource("apps", "v1", "statefulsets", "StatefulSet")
# rbac, storage
CLUSTER_ROLE = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTER_ROLE_BINDING = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
CSI_DRIVER = Resource("storage.k8s.io", "v1", "csidrivers", "CSIDriver", namespaced=False)
CRD = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False
)
# Secrets Store CSI
SPC = Resource("secrets-store.csi.x-k8s.io", "v1", "secretproviderclasses", "SecretProviderClass")
SPCPS = Resource(
    "secrets-store.csi.x-k8s.io", "v1", "secretproviderclasspodstatuses", "SecretProviderClassPodStatus"
)
# Prometheus operator
SERVICE_MONITOR = Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
PROMETHEUS_RULE = Resource("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule")
