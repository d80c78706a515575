"""The one client for the Kubernetes REST API: plain JSON over one pool of keep-alive connections.

Requests and watches are JSON documents (`Obj`), so any kind (including CRDs such as
ServiceMonitor) needs no generated model and import cost stays small on every node. Every
failure is an `ApiError`; transport failures are 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import config
from .errors import ApiError, from_reply
from .resources import Obj, Resource
from .transport import HttpTransport, Reply, Transport

Selector = Mapping[str, str] | str | None


def _selector(items: Selector) -> str | None:
    if not items:
        return None
    if isinstance(items, str):
        return items
    return ",".join(f"{k}={v}" for k, v in items.items())


@dataclass(frozen=True)
class Applied:
    """What a server-side apply returned, and whether it created the object."""

    obj: Obj
    created: bool


@dataclass(frozen=True)
class Listing:
    """Every item of a (paged) list, and the resourceVersion to watch from."""

    items: list[Obj]
    resource_version: str


# Requests on the wire at once. A burst of kubelet calls (110 pods at node start) must not open a TLS
# connection per request (a handshake costs ~2.5-4 ms of this process's CPU, an answer a few ms): bounded,
# they reuse the pool's keep-alive connections. 6 instead of 16 (issue 15): 110 concurrent creates from a
# cold client took 52-65 ms of CPU instead of 75-104 ms. Watches use `stream` and are not counted.
MAX_IN_FLIGHT = 6


class KubeClient:
    def __init__(
        self, transport: Transport, max_in_flight: int = MAX_IN_FLIGHT, slot_timeout: float = 15.0
    ) -> None:
        self._transport = transport
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._slot_timeout = slot_timeout  # waiting for a slot is bounded like any wait for an answer
        # Whether the apiserver streams a watch's initial state (sendInitialEvents, Kubernetes' WatchList,
        # on by default since 1.34): None until a watch asked, then what the apiserver answered.
        self.watch_list: bool | None = None

    @classmethod
    def from_config(
        cls, kubeconfig: str | None, user_agent: str, timeout: float = 15.0, context: str | None = None
    ) -> KubeClient:
        return cls(
            HttpTransport(config.endpoint(kubeconfig, context), user_agent, timeout), slot_timeout=timeout
        )

    async def close(self) -> None:
        await self._transport.close()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, Obj]:
        """One request; returns (HTTP status, JSON document or {} when empty)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        content = None if body is None else json.dumps(body).encode()
        reply = await self._exchange(method, path, query, content, content_type)
        try:
            document: Obj = json.loads(reply.body) if reply.body else {}
        except ValueError as err:
            raise ApiError(502, "BadGateway", f"apiserver sent no JSON: {reply.body[:200]!r}") from err
        return reply.status, document

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        return (await self.send(method, path, params=params, body=body, content_type=content_type))[1]

    async def get_text(self, path: str) -> str:
        """A GET whose answer is text, not JSON: e.g. a pod's /metrics through `pods/proxy` (the CLI)."""
        return (await self._exchange("GET", path, {}, None, None)).body.decode("utf-8", "replace")

    async def _exchange(
        self, method: str, path: str, query: Mapping[str, Any], body: bytes | None, content_type: str | None
    ) -> Reply:
        """One HTTP exchange inside the in-flight bound; transport failures and 4xx/5xx become ApiError."""
        try:
            async with asyncio.timeout(self._slot_timeout):
                await self._in_flight.acquire()
        except TimeoutError as err:
            raise ApiError(
                503, "ServiceUnavailable", "apiserver: no answer to the requests in flight"
            ) from err
        try:
            reply = await self._transport.request(method, path, query, body, content_type)
        finally:
            self._in_flight.release()
        if reply.status >= 400:
            raise from_reply(reply.status, reply.reason, reply.body)
        return reply

    # ---- reads ----

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj:
        """The object; ApiError(404) when it does not exist."""
        return await self.request("GET", res.path(namespace, name))

    async def find(self, res: Resource, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return await self.get(res, name, namespace)
        except ApiError as err:
            if err.not_found:
                return None
            raise

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        labels: Selector = None,
        fields: Selector = None,
    ) -> Obj:
        """One unpaged list document (`items`, `metadata.resourceVersion`)."""
        params = {"labelSelector": _selector(labels), "fieldSelector": _selector(fields)}
        return await self.request("GET", res.path(namespace), params=params)

    async def list_all(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        labels: Selector = None,
        fields: Selector = None,
        page_size: int = 500,
    ) -> Listing:
        """Every matching object, page by page; items carry apiVersion and kind (lists leave them out)."""
        items: list[Obj] = []
        params: dict[str, Any] = {
            "limit": str(page_size),
            "labelSelector": _selector(labels),
            "fieldSelector": _selector(fields),
        }
        while True:
            document = await self.request("GET", res.path(namespace), params=params)
            for item in document.get("items") or []:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            meta = document.get("metadata") or {}
            if not meta.get("continue"):
                return Listing(items, str(meta.get("resourceVersion") or ""))
            params["continue"] = meta["continue"]

    async def watch(
        self,
        res: Resource,
        namespace: str | None,
        resource_version: str,
        *,
        labels: Selector = None,
        fields: Selector = None,
        timeout_seconds: int = 300,
        send_initial_events: bool = False,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (type, object) events; ends when the server closes the watch.

        An ERROR event (e.g. 410 Gone: the resourceVersion expired) raises its ApiError.
        `send_initial_events` asks for the current objects first (ADDED events, then a BOOKMARK
        annotated `k8s.io/initial-events-end`): a list and a watch in one request. An apiserver
        without the WatchList feature refuses it (422).
        """
        params: dict[str, str | int | None] = {
            "watch": "true",
            "resourceVersion": resource_version or None,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
            "labelSelector": _selector(labels),
            "fieldSelector": _selector(fields),
        }
        if send_initial_events:
            params |= {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
        query = {k: v for k, v in params.items() if v is not None}
        stream = await self._transport.stream(res.path(namespace), query, read_timeout=timeout_seconds + 30.0)
        try:
            if stream.status >= 400:
                raise from_reply(stream.status, stream.reason, await stream.read())
            async for line in stream.lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(
                        int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", ""))
                    )
                yield kind, obj
        finally:
            await stream.aclose()

    # ---- writes ----

    async def create(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        return await self.request("POST", res.path(namespace), body=obj)

    async def replace(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        return await self.request("PUT", res.path(namespace, obj["metadata"]["name"]), body=obj)

    async def replace_status(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        return await self.request("PUT", res.path(namespace, obj["metadata"]["name"], "status"), body=obj)

    async def merge_patch(
        self, res: Resource, name: str, patch: Obj, namespace: str | None = None, *, sub: str | None = None
    ) -> Obj:
        """JSON merge patch (RFC 7386) of the object or of a subresource such as `status`."""
        return await self.request(
            "PATCH", res.path(namespace, name, sub), body=patch, content_type="application/merge-patch+json"
        )

    async def apply(self, res: Resource, manifest: Obj, *, field_manager: str, force: bool = True) -> Applied:
        """Server-side apply; `force` takes over fields another manager owns."""
        meta = manifest["metadata"]
        status, obj = await self.send(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": field_manager, "force": "true" if force else None},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        return Applied(obj, created=status == 201)

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Mapping[str, str] | None = None,
        propagation: str | None = None,
        missing_ok: bool = False,
    ) -> bool:
        """Delete; False when it was already gone and `missing_ok` (else ApiError(404)).

        `preconditions` ({"uid": .., "resourceVersion": ..}) make a mismatch fail with 409;
        `propagation` ("Background", "Foreground", "Orphan") says what happens to dependents.
        """
        body: Obj | None = None
        if preconditions or propagation:
            body = {"apiVersion": "v1", "kind": "DeleteOptions"}
            if preconditions:
                body["preconditions"] = dict(preconditions)
            if propagation:
                body["propagationPolicy"] = propagation
        try:
            await self.request("DELETE", res.path(namespace, name), body=body)
        except ApiError as err:
            if missing_ok and err.not_found:
                return False
            raise
        return True

    # ---- discovery ----

    async def serves(self, res: Resource) -> bool:
        """Whether the apiserver serves this resource now (e.g. the ServiceMonitor CRD is installed)."""
        try:
            document = await self.request("GET", res.group_path)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return any(item.get("name") == res.plural for item in document.get("resources") or [])

    async def serves_group(self, group: str) -> bool:
        """Whether any version of an API group is served (e.g. OpenShift's `security.openshift.io`)."""
        document = await self.request("GET", "/apis")
        return any(item.get("name") == group for item in document.get("groups") or [])
