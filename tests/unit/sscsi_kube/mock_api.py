"""An in-memory apiserver answering through httpx2's MockTransport: what the client sent, scripted replies."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from sscsi_kube import KubeClient

Handler = Callable[[httpx2.Request], httpx2.Response]


@dataclass
class Sent:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    content_type: str | None


@dataclass
class MockApi:
    handler: Handler
    sent: list[Sent] = field(default_factory=list)

    def _serve(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append(
            Sent(
                request.method,
                request.url.path,
                dict(request.url.params),
                body,
                request.headers.get("Content-Type"),
            )
        )
        return self.handler(request)

    def client(self, max_in_flight: int = 16) -> KubeClient:
        transport = httpx2.MockTransport(self._serve)
        return KubeClient(httpx2.AsyncClient(transport=transport, base_url="https://k8s"), max_in_flight)


def status(code: int, reason: str, message: str) -> httpx2.Response:
    body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}
    return httpx2.Response(code, json=body)
