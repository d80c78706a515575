"""HTTP/1.1 on the wire: a request's bytes, an answer's head, and its body by whichever framing it uses.

The apiserver answers with Content-Length, or chunked (every watch); a body that runs until the
connection closes is read too, but leaves no connection to reuse. A gzip body (the apiserver
compresses large lists for a client that accepts it) is inflated here.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 as we speak it."""


@dataclass(frozen=True)
class Head:
    """Status line and headers of an answer (header names in lower case, repeats joined by ", ")."""

    status: int
    reason: str
    headers: dict[str, str]
    keep_alive: bool

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise ProtocolError(f"bad Content-Length {value!r}")
        return int(value)

    @property
    def gzip(self) -> bool:
        return self.headers.get("content-encoding", "").lower() == "gzip"


def _clean(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("a header value holds a line break")
    return value


def encode_request(method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request's bytes: `target` is the path with its query; `headers` include Host."""
    lines = [f"{method} {_clean(target)} HTTP/1.1"]
    lines += [f"{name}: {_clean(value)}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def parse_head(raw: bytes) -> Head:
    """Status line and headers, `raw` ending with the empty line."""
    text = raw.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    version, _, tail = status_line.partition(" ")
    code, _, reason = tail.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
    return Head(int(code), reason, headers, keep_alive)


async def read_head(reader: asyncio.StreamReader) -> Head:
    """The next final answer's head (1xx interim answers are skipped)."""
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        if len(raw) > MAX_HEAD:
            raise ProtocolError("answer head too large")
        head = parse_head(raw)
        if not 100 <= head.status < 200:
            return head


def has_body(method: str, head: Head) -> bool:
    return method != "HEAD" and head.status not in (204, 304)


def reusable(method: str, head: Head) -> bool:
    """Whether the connection can carry another request once this answer's body is read."""
    framed = not has_body(method, head) or head.chunked or head.length is not None
    return head.keep_alive and framed


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                pass
            return
        data = await reader.readexactly(size + 2)
        if data[-2:] != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")
        yield data[:-2]


async def _until_eof(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while data := await reader.read(READ_SIZE):
        yield data


async def body_parts(reader: asyncio.StreamReader, method: str, head: Head) -> AsyncIterator[bytes]:
    """The body as it arrives, inflated when gzip; nothing for HEAD, 204 and 304."""
    if not has_body(method, head):
        return
    length = head.length
    if head.chunked:
        parts = _chunks(reader)
    elif length is not None:
        if length:
            yield _inflated(head, await reader.readexactly(length))
        return
    else:
        parts = _until_eof(reader)
    inflate = zlib.decompressobj(wbits=31) if head.gzip else None
    async for part in parts:
        yield inflate.decompress(part) if inflate else part
    if inflate:
        yield inflate.flush()


def _inflated(head: Head, data: bytes) -> bytes:
    return zlib.decompress(data, wbits=31) if head.gzip else data


async def read_body(reader: asyncio.StreamReader, method: str, head: Head) -> bytes:
    length = head.length
    if has_body(method, head) and not head.chunked and length is not None:  # the usual answer: one read
        return _inflated(head, await reader.readexactly(length)) if length else b""
    return b"".join([part async for part in body_parts(reader, method, head)])


async def lines(parts: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Newline-separated lines across parts (a watch sends one JSON event per line, chunks split anywhere)."""
    pending = b""
    async for part in parts:
        pending += part
        if b"\n" in pending:
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line
    if pending:
        yield pending
