"""A small typed async client for the Kubernetes REST API.

Connection setup (kubeconfig, in-cluster service account, TLS, auth plugins)
comes from lightkube's config layer; requests and watches are plain JSON so
the driver needs no generated models (import cost and RSS matter on every node).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube.config.client_adapter import AsyncClient as _configured_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig

Obj = dict[str, Any]

# One URL path segment naming a namespace or an object. Without this check a name such as
# `../../other/secrets/x` (a pod author's volumeAttributes or secretObjects) would be
# normalised by the HTTP client into another namespace's URL.
_SEGMENT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,251}[A-Za-z0-9])?")


def _segment(kind: str, value: str) -> str:
    if not _SEGMENT.fullmatch(value) or ".." in value:
        raise ApiError(400, "BadRequest", f"invalid {kind} {value!r}: not a Kubernetes object name")
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

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        parts = ["/api", self.version] if not self.group else ["/apis", self.group, self.version]
        if self.namespaced and namespace is not None:
            parts += ["namespaces", _segment("namespace", namespace)]
        parts.append(self.plural)
        if name is not None:
            parts.append(_segment(f"{self.kind} name", name))
        if sub is not None:
            parts.append(sub)
        return "/".join(parts)


SPC = Resource("secrets-store.csi.x-k8s.io", "v1", "secretproviderclasses", "SecretProviderClass")
SPCPS = Resource(
    "secrets-store.csi.x-k8s.io", "v1", "secretproviderclasspodstatuses", "SecretProviderClassPodStatus"
)
POD = Resource("", "v1", "pods", "Pod")
SECRET = Resource("", "v1", "secrets", "Secret")
EVENT = Resource("", "v1", "events", "Event")


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{message} ({status} {reason})" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        return self.status == 410


def _error_from(response: httpx2.Response) -> ApiError:
    try:
        doc = response.json()
        return ApiError(response.status_code, str(doc.get("reason", "")), str(doc.get("message", "")))
    except ValueError:
        return ApiError(response.status_code, response.reason_phrase, response.text[:200])


def _selector(items: Mapping[str, str] | None) -> str | None:
    if not items:
        return None
    return ",".join(f"{k}={v}" for k, v in items.items())


class KubeApi:
    def __init__(self, http: httpx2.AsyncClient, max_in_flight: int = 16) -> None:
        self._http = http
        # A burst of kubelet calls (110 pods at node start) must not open a TLS connection per
        # request: bounded, they reuse the pool's keep-alive connections (httpx keeps 20).
        # Watches use `stream` and are not counted.
        self._in_flight = asyncio.Semaphore(max_in_flight)

    @classmethod
    def from_config(cls, kubeconfig: str | None, user_agent: str, timeout: float = 15.0) -> KubeApi:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        params = ConnectionParams(timeout=httpx2.Timeout(timeout))
        single = config.get()
        if single is None:
            raise RuntimeError("no usable Kubernetes configuration (kubeconfig context or in-cluster)")
        http = _configured_client(single, params)
        http.headers["User-Agent"] = user_agent
        return cls(http)

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        kwargs: dict[str, Any] = {"params": {k: v for k, v in (params or {}).items() if v is not None}}
        if body is not None:
            kwargs["content"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": content_type}
        try:
            async with self._in_flight:
                response = await self._http.request(method, path, **kwargs)
        except httpx2.HTTPError as err:  # connection refused/reset, TLS, timeouts
            raise ApiError(503, "ServiceUnavailable", f"apiserver unreachable: {err!r}") from err
        if response.status_code >= 400:
            raise _error_from(response)
        result: Obj = response.json()
        return result

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj:
        return await self.request("GET", res.path(namespace, name))

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> Obj:
        params = {"labelSelector": _selector(labels), "fieldSelector": _selector(fields)}
        return await self.request("GET", res.path(namespace), params=params)

    async def create(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        return await self.request("POST", res.path(namespace), body=obj)

    async def replace(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        name = obj["metadata"]["name"]
        return await self.request("PUT", res.path(namespace, name), body=obj)

    async def replace_status(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        name = obj["metadata"]["name"]
        return await self.request("PUT", res.path(namespace, name, "status"), body=obj)

    async def merge_patch(self, res: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        return await self.request(
            "PATCH", res.path(namespace, name), body=patch, content_type="application/merge-patch+json"
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> None:
        """Delete; `preconditions` ({"uid": .., "resourceVersion": ..}) make a mismatch fail with 409."""
        body = None
        if preconditions:
            body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": dict(preconditions)}
        await self.request("DELETE", res.path(namespace, name), body=body)

    async def watch(
        self,
        res: Resource,
        namespace: str | None,
        resource_version: str,
        *,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (type, object) events; ends when the server closes the watch."""
        params: dict[str, str | int | None] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
            "labelSelector": _selector(labels),
            "fieldSelector": _selector(fields),
        }
        query = {k: v for k, v in params.items() if v is not None}
        timeout = httpx2.Timeout(15.0, read=timeout_seconds + 30.0)
        async with self._http.stream("GET", res.path(namespace), params=query, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error_from(response)
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(
                        int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", ""))
                    )
                yield kind, obj
