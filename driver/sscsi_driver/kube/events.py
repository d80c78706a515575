"""Kubernetes Events on pods: what a user sees in `kubectl describe pod`."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from ..models import PodRef
from .api import EVENT, KubeApi

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder:
    def __init__(self, api: KubeApi, component: str, host: str) -> None:
        self._api = api
        self._component = component
        self._host = host
        self._pending: set[asyncio.Task[None]] = set()

    def pod_event(self, pod: PodRef, type_: str, reason: str, message: str) -> None:
        """Fire and forget: an event must never block or fail a mount."""
        task = asyncio.create_task(self._post(pod, type_, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, pod: PodRef, type_: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self._component, "host": self._host},
            "reportingComponent": self._component,
            "reportingInstance": self._host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._api.create(EVENT, body, pod.namespace)
        except Exception as err:
            log.warning("could not post event", extra={"reason": reason, "pod": pod.name, "error": str(err)})

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
