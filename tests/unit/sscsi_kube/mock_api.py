"""An in-memory apiserver behind KubeClient's Transport seam: what the client sent, scripted replies.

A handler gets a `Request` and returns a `Response`: `Response(200, json=...)`,
`Response(403, content=b"...")`, or `Response(200, content=<async iterator of bytes>)` for a watch
that keeps streaming.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sscsi_kube import KubeClient
from sscsi_kube.transport import AnswerStream, Reply


@dataclass(frozen=True)
class Url:
    path: str
    params: dict[str, str]


@dataclass(frozen=True)
class Request:
    method: str
    url: Url
    content: bytes
    headers: dict[str, str]


class Response:
    def __init__(
        self, status_code: int, *, json: Any = None, content: bytes | AsyncIterator[bytes] | str = b""
    ) -> None:
        self.status_code = status_code
        if json is not None:
            content = _dumps(json)
        self.content: bytes | AsyncIterator[bytes] = content.encode() if isinstance(content, str) else content

    async def parts(self) -> AsyncIterator[bytes]:
        if isinstance(self.content, bytes):
            yield self.content
        else:
            async for part in self.content:
                yield part

    async def body(self) -> bytes:
        return b"".join([part async for part in self.parts()])


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


Handler = Callable[[Request], Response]
Query = Mapping[str, str | int] | None


@dataclass
class Sent:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    content_type: str | None


class _Stream:
    def __init__(self, response: Response) -> None:
        self.status = response.status_code
        self.reason = ""
        self._response = response

    async def lines(self) -> AsyncIterator[bytes]:
        pending = b""
        async for part in self._response.parts():
            pending += part
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line
        if pending:
            yield pending

    async def read(self) -> bytes:
        return await self._response.body()

    async def aclose(self) -> None:
        return None


@dataclass
class MockApi:
    handler: Handler
    sent: list[Sent] = field(default_factory=list)
    closed: bool = False

    def _serve(self, method: str, path: str, query: Query, body: bytes | None, ctype: str | None) -> Response:
        params = {k: str(v) for k, v in (query or {}).items()}
        self.sent.append(Sent(method, path, params, json.loads(body) if body else None, ctype))
        headers = {"Content-Type": ctype} if ctype else {}
        return self.handler(Request(method, Url(path, params), body or b"", headers))

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Reply:
        response = self._serve(method, path, query, body, content_type if body is not None else None)
        return Reply(response.status_code, "", {}, await response.body())

    async def stream(self, path: str, query: Query, read_timeout: float) -> AnswerStream:
        return _Stream(self._serve("GET", path, query, None, None))

    async def close(self) -> None:
        self.closed = True

    def client(self) -> KubeClient:
        return KubeClient(self)  # with the driver's in-flight bound


def status(code: int, reason: str, message: str) -> Response:
    body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}
    return Response(code, json=body)
