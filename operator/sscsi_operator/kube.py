"""A small async JSON client for the few Kubernetes calls the reconciler makes.

Connection setup (kubeconfig, in-cluster token that rotates, TLS) is lightkube's config layer;
requests are plain JSON, so any kind (including ServiceMonitor) needs no generated model.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube.config.client_adapter import AsyncClient as configured_http_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig

from . import names

Obj = dict[str, Any]
Objs = list[Obj]


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        parts = ["/apis", self.group, self.version] if self.group else ["/api", self.version]
        if self.namespaced and namespace:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        parts += [part for part in (name, sub) if part]
        return "/".join(parts)


POD = Kind("", "v1", "pods", "Pod", namespaced=True)
SERVICE_ACCOUNT = Kind("", "v1", "serviceaccounts", "ServiceAccount", namespaced=True)
SERVICE = Kind("", "v1", "services", "Service", namespaced=True)
DAEMON_SET = Kind("apps", "v1", "daemonsets", "DaemonSet", namespaced=True)
SERVICE_MONITOR = Kind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", namespaced=True)
PROMETHEUS_RULE = Kind("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule", namespaced=True)
CLUSTER_ROLE = Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTER_ROLE_BINDING = Kind(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
CSI_DRIVER = Kind("storage.k8s.io", "v1", "csidrivers", "CSIDriver", namespaced=False)
VALIDATING_ADMISSION_POLICY = Kind(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicies",
    "ValidatingAdmissionPolicy",
    namespaced=False,
)
VALIDATING_ADMISSION_POLICY_BINDING = Kind(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicybindings",
    "ValidatingAdmissionPolicyBinding",
    namespaced=False,
)
# Served only by OpenShift, whose own admission plugin enforces the ephemeral volume profile.
SECURITY_CONTEXT_CONSTRAINTS = Kind(
    "security.openshift.io",
    "v1",
    "securitycontextconstraints",
    "SecurityContextConstraints",
    namespaced=False,
)
CLUSTER_CSI_DRIVER = Kind(names.GROUP, names.VERSION, names.PLURAL, names.KIND, namespaced=False)

# Every kind the operator may create, in apply order (removal runs in reverse).
CHILD_KINDS = (
    SERVICE_ACCOUNT,
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    CSI_DRIVER,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    SERVICE,
    SERVICE_MONITOR,
    PROMETHEUS_RULE,
    DAEMON_SET,
)
_BY_TYPE = {(kind.api_version, kind.kind): kind for kind in (*CHILD_KINDS, CLUSTER_CSI_DRIVER)}


def kind_of(manifest: Mapping[str, Any]) -> Kind:
    return _BY_TYPE[(manifest["apiVersion"], manifest["kind"])]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message or f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message or f"{status} {reason}"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def immutable_field(self) -> bool:
        return self.status == 422 and "field is immutable" in self.message


@dataclass(frozen=True)
class Applied:
    obj: Obj
    created: bool


class KubeClient:
    def __init__(self, http: httpx2.AsyncClient) -> None:
        self._http = http

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, timeout: float = 30.0) -> KubeClient:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        single = config.get()
        if single is None:
            raise RuntimeError("no usable Kubernetes configuration (kubeconfig context or in-cluster)")
        http = configured_http_client(single, ConnectionParams(timeout=httpx2.Timeout(timeout)))
        http.headers["User-Agent"] = f"{names.OPERATOR_NAME}/python"
        return cls(http)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, Obj]:
        kwargs: dict[str, Any] = {"params": dict(params or {})}
        if body is not None:
            kwargs["content"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": content_type}
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error_from(response)
        document: Obj = response.json() if response.content else {}
        return response.status_code, document

    async def apply(self, manifest: Obj) -> Applied:
        """Server-side apply with the operator's field manager, taking over conflicting fields."""
        kind = kind_of(manifest)
        metadata = manifest["metadata"]
        path = kind.path(metadata.get("namespace"), metadata["name"])
        params = {"fieldManager": names.FIELD_MANAGER, "force": "true"}
        status, obj = await self._request(
            "PATCH", path, params=params, body=manifest, content_type="application/apply-patch+yaml"
        )
        return Applied(obj, created=status == 201)

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return (await self._request("GET", kind.path(namespace, name)))[1]
        except ApiError as err:
            if err.not_found:
                return None
            raise

    async def list(self, kind: Kind, namespace: str | None, label_selector: str) -> list[Obj]:
        _, document = await self._request(
            "GET", kind.path(namespace), params={"labelSelector": label_selector}
        )
        items: list[Obj] = document.get("items") or []
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    async def list_all(
        self, kind: Kind, namespace: str | None = None, *, field_selector: str = "", page_size: int = 500
    ) -> Objs:
        """Every object of a kind (all namespaces when `namespace` is None), page by page."""
        items: Objs = []
        params = {"limit": str(page_size)} | ({"fieldSelector": field_selector} if field_selector else {})
        while True:
            _, document = await self._request("GET", kind.path(namespace), params=params)
            items += document.get("items") or []
            token = (document.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = params | {"continue": token}

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Delete in the background (dependents such as pods go via the garbage collector).

        False when the object was already gone.
        """
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            await self._request("DELETE", kind.path(namespace, name), body=body)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return True

    async def patch_status(self, kind: Kind, name: str, status: Obj) -> Obj:
        _, obj = await self._request(
            "PATCH",
            kind.path(None, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
        )
        return obj

    async def post_event(self, regarding: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about a cluster-scoped object.

        The apiserver files those under `default` (involvedObject without a namespace), which is also
        where `kubectl describe` looks for them.
        """
        namespace = "default"
        metadata = regarding["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": metadata["name"],
                "uid": metadata.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": names.OPERATOR_NAME},
            "reportingComponent": names.OPERATOR_NAME,
            "reportingInstance": names.OPERATOR_NAME,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)

    async def serves(self, kind: Kind) -> bool:
        """Whether the apiserver serves this kind now (e.g. the ServiceMonitor CRD is installed)."""
        path = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
        try:
            _, document = await self._request("GET", path)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return any(resource.get("name") == kind.plural for resource in document.get("resources") or [])


def _error_from(response: httpx2.Response) -> ApiError:
    try:
        document = response.json()
        return ApiError(
            response.status_code, str(document.get("reason", "")), str(document.get("message", ""))
        )
    except ValueError:
        return ApiError(response.status_code, response.reason_phrase, response.text[:300])
