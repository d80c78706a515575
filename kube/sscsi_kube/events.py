"""core/v1 Events: what a user sees in `kubectl describe` (one body builder for every component)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from .client import KubeClient
from .resources import EVENT, Obj

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE = 1024


def event_body(
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    *,
    component: str,
    instance: str | None = None,
    host: str | None = None,
    namespace: str | None = None,
) -> Obj:
    """An Event about `involved` ({apiVersion, kind, name, namespace?, uid}).

    It is filed in the involved object's namespace, else in `namespace`: the apiserver files Events about
    cluster-scoped objects under `default`, which is also where `kubectl describe` looks for them.
    """
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = involved.get("namespace") or namespace or "default"
    source = {"component": component} | ({"host": host} if host else {})
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": where},
        "involvedObject": dict(involved),
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": type_,
        "source": source,
        "reportingComponent": component,
        "reportingInstance": instance or host or component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def involved_object(obj: Mapping[str, Any], api_version: str | None = None, kind: str | None = None) -> Obj:
    """The involvedObject reference of an object as read (list items lack apiVersion and kind: pass them)."""
    meta = obj.get("metadata") or {}
    ref: Obj = {
        "apiVersion": api_version or obj.get("apiVersion"),
        "kind": kind or obj.get("kind"),
        "name": meta.get("name"),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    ref["uid"] = meta.get("uid")
    return ref


async def post_event(client: KubeClient, body: Obj) -> Obj:
    return await client.create(EVENT, body, body["metadata"]["namespace"])


class PodLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def uid(self) -> str: ...


class EventRecorder:
    """Events on pods, fire and forget: an event must never block or fail the work it reports."""

    def __init__(self, api: KubeClient, component: str, host: str) -> None:
        self._api = api
        self._component = component
        self._host = host
        self._pending: set[asyncio.Task[None]] = set()

    def pod_event(self, pod: PodLike, type_: str, reason: str, message: str) -> None:
        task = asyncio.create_task(self._post(pod, type_, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, pod: PodLike, type_: str, reason: str, message: str) -> None:
        involved = {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "namespace": pod.namespace}
        involved["uid"] = pod.uid
        body = event_body(involved, type_, reason, message, component=self._component, host=self._host)
        try:
            await post_event(self._api, body)
        except Exception as err:
            log.warning("could not post event", extra={"reason": reason, "pod": pod.name, "error": str(err)})

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
