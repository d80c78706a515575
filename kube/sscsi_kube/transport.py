"""HTTP/1.1 to one apiserver on asyncio streams: keep-alive connections, TLS, credentials, timeouts.

Why not a general HTTP client: measured on this project's 2-core machine, a GET through httpx2 (anyio,
httpcore, h11) cost about 1.9 ms of CPU, through this module about 0.25 ms; a changed republish pass
sends 220 of them. A request takes an idle connection (or opens one), writes, reads the answer head and
body, and gives the connection back when the answer left it reusable. A reused connection that fails
before any answer byte arrived (the apiserver closed it while idle) is retried once on a new one.
Every failure to get an answer (refused, reset, TLS, timeout, garbage) is `ApiError(503)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlencode

from . import http1
from .auth import ConfigError
from .config import Endpoint
from .errors import ApiError, from_reply, from_transport

IDLE_SECONDS = 60.0  # the apiserver closes idle connections after 90 s
MAX_IDLE = 20
TLS_READ_SIZE = 32 * 1024
_FAILURES = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, http1.ProtocolError)
_SAFE_PATH = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


class AnswerStream(Protocol):
    """An answer read as it arrives (a watch): its status, then its body by lines or whole."""

    status: int
    reason: str

    def lines(self) -> AsyncIterator[bytes]: ...
    async def read(self) -> bytes: ...
    async def aclose(self) -> None: ...


class Transport(Protocol):
    """What KubeClient needs of HTTP (HttpTransport; the unit tests' in-memory apiserver)."""

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Reply: ...

    async def stream(
        self, path: str, query: Mapping[str, str | int] | None, read_timeout: float
    ) -> AnswerStream: ...

    async def close(self) -> None: ...


def _shrink_tls_buffer(writer: asyncio.StreamWriter) -> None:
    """asyncio's TLS protocol (sslproto, Python 3.11-3.13) gives every connection a zero-filled 256 KiB
    receive buffer, so each keep-alive connection cost the driver ~300 KiB of RSS (measured: 16 of them
    +4.8 MiB). Its size is the protocol's `max_size`; an instance value with a smaller buffer keeps TLS
    records (16 KiB at most) whole. Without those attributes (another Python) the default stays."""
    protocol = getattr(writer.transport, "_ssl_protocol", None)
    if protocol is None or not isinstance(getattr(protocol, "_ssl_buffer", None), bytearray):
        return
    protocol.max_size = TLS_READ_SIZE
    protocol._ssl_buffer = bytearray(TLS_READ_SIZE)
    protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()
        self.used = False

    def alive(self, now: float) -> bool:
        if self.reader.at_eof() or self.reader.exception() is not None or self.writer.is_closing():
            return False
        return now - self.idle_since < IDLE_SECONDS

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Stale(Exception):
    """A reused connection failed before the answer began: the apiserver had closed it."""


class Stream:
    """An answer whose body is read as it arrives (a watch); owns its connection until `aclose`."""

    def __init__(self, head: http1.Head, connection: _Connection, read_timeout: float) -> None:
        self.status = head.status
        self.reason = head.reason
        self._head = head
        self._connection = connection
        self._read_timeout = read_timeout

    async def _parts(self) -> AsyncIterator[bytes]:
        parts = http1.body_parts(self._connection.reader, "GET", self._head)
        try:
            while True:
                async with asyncio.timeout(self._read_timeout):
                    part = await anext(parts, None)
                if part is None:
                    return
                yield part
        except (*_FAILURES, TimeoutError) as err:
            raise from_transport(err) from err

    def lines(self) -> AsyncIterator[bytes]:
        return http1.lines(self._parts())

    async def read(self) -> bytes:
        return b"".join([part async for part in self._parts()])

    async def aclose(self) -> None:
        self._connection.close()


class HttpTransport:
    """Requests to one `Endpoint`; `timeout` bounds connecting and each wait for answer bytes."""

    def __init__(self, endpoint: Endpoint, user_agent: str, timeout: float = 15.0) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._idle: list[_Connection] = []
        self._headers = {
            "Host": endpoint.authority,
            "User-Agent": user_agent,
            "Accept": "application/json, */*",
            "Accept-Encoding": "gzip",
        }

    def _target(self, path: str, query: Mapping[str, str | int] | None) -> str:
        target = quote(self._endpoint.base_path + path, safe=_SAFE_PATH)
        return f"{target}?{urlencode(query)}" if query else target

    async def _connect(self) -> _Connection:
        ep = self._endpoint
        hostname = (ep.server_hostname or ep.host) if ep.tls else None
        reader, writer = await asyncio.open_connection(
            ep.host, ep.port, ssl=ep.tls, server_hostname=hostname, limit=http1.MAX_HEAD * 2
        )
        _shrink_tls_buffer(writer)
        return _Connection(reader, writer)

    async def _acquire(self, fresh: bool) -> _Connection:
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if connection.alive(now):
                return connection
            connection.close()
        async with asyncio.timeout(self._timeout):
            return await self._connect()

    def _release(self, connection: _Connection) -> None:
        if len(self._idle) >= MAX_IDLE:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connection.used = True
        self._idle.append(connection)

    async def _headers_for(self, body: bytes | None, content_type: str | None) -> dict[str, str]:
        headers = dict(self._headers)
        try:
            credential = await self._endpoint.auth.header()
        except ConfigError as err:
            raise ApiError(503, "ServiceUnavailable", f"no credentials for the apiserver: {err}") from err
        if credential:
            headers["Authorization"] = credential
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        return headers

    async def _send(
        self, method: str, target: str, body: bytes | None, content_type: str | None, fresh: bool = False
    ) -> tuple[_Connection, http1.Head]:
        """Write the request and read the answer's head, on a connection the caller then owns."""
        request = http1.encode_request(method, target, await self._headers_for(body, content_type), body)
        connection = await self._acquire(fresh)
        reused = connection.used
        try:
            async with asyncio.timeout(self._timeout):
                connection.writer.write(request)
                await connection.writer.drain()
                head = await http1.read_head(connection.reader)
        except BaseException as err:
            connection.close()
            nothing_came = isinstance(err, ConnectionError | EOFError) or (
                isinstance(err, asyncio.IncompleteReadError) and not err.partial
            )
            if reused and nothing_came:
                raise _Stale from err
            raise
        return connection, head

    async def _open(
        self, method: str, target: str, body: bytes | None, content_type: str | None
    ) -> tuple[_Connection, http1.Head]:
        """`_send`, again on a new connection when a reused one was stale, and once after a 401 renewed
        the credentials; failures mapped to ApiError."""
        renewed = False
        while True:
            try:
                try:
                    connection, head = await self._send(method, target, body, content_type)
                except _Stale:
                    connection, head = await self._send(method, target, body, content_type, fresh=True)
            except _Stale as err:
                raise from_transport(err.__cause__ or err) from err
            except (*_FAILURES, TimeoutError, ssl.SSLError) as err:
                raise from_transport(err) from err
            if head.status != 401 or renewed:
                return connection, head
            renewed = True
            refused = await self._finish(method, connection, head)  # drained, so its connection is reused
            try:
                retry = await self._endpoint.auth.rejected()
            except ConfigError as err:
                raise ApiError(401, "Unauthorized", f"credentials refused and not renewable: {err}") from err
            if not retry:
                raise from_reply(head.status, head.reason, refused)

    async def _finish(self, method: str, connection: _Connection, head: http1.Head) -> bytes:
        """Read the body; the connection goes back to the pool when the answer allows it."""
        done = False
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                if head.chunked:
                    parts = []
                    async for part in http1.body_parts(connection.reader, method, head):
                        parts.append(part)
                        deadline.reschedule(asyncio.get_running_loop().time() + self._timeout)
                    body = b"".join(parts)
                else:
                    body = await http1.read_body(connection.reader, method, head)
            done = http1.reusable(method, head)
        except (*_FAILURES, TimeoutError, ValueError) as err:
            raise from_transport(err) from err
        finally:
            if done:
                self._release(connection)
            else:
                connection.close()
        return body

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Reply:
        """One exchange; any status comes back as a Reply (the caller maps >= 400)."""
        target = self._target(path, query)
        connection, head = await self._open(method, target, body, content_type)
        return Reply(head.status, head.reason, head.headers, await self._finish(method, connection, head))

    async def stream(self, path: str, query: Mapping[str, str | int] | None, read_timeout: float) -> Stream:
        """A GET whose body is read as it comes (`Stream.lines`), each wait bounded by `read_timeout`."""
        connection, head = await self._open("GET", self._target(path, query), None, None)
        return Stream(head, connection, read_timeout)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await connection.writer.wait_closed()
