"""HTTP control server: tests flip the provider's toggles with plain GET requests.

Endpoints (all GET; 200 with a short text body unless noted):

``/rotation?rotated=true|false``
    Turn rotation on or off (upstream e2e provider). Any other value: 400.
``/validate-token-requests?audience=a,b,c``
    Audiences whose service-account tokens Mount must receive (upstream e2e
    provider). An empty or missing value clears the set.
``/fault?mode=<mode>&code=<code>&seconds=<n>``
    Fault injection for later Mount calls (extension). ``mode`` is one of none,
    error-code, unavailable, slow, no-versions, bad-path, hang, garbage (see
    `sscsi_provider.service`); ``code`` is the
    MountResponse error code for error-code; ``seconds`` the delay for slow.
    Invalid values: 400.
``/healthz``
    ``ok``.
``/state``
    JSON: rotation, required audiences, fault, number of Mount calls, of Mounts held by
    the ``hang`` fault right now, and of pods seen.

Unknown paths are 404.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sscsi_provider.state import Fault, ProviderState

log = logging.getLogger(__name__)

DEFAULT_HTTP_ADDR = ":8080"


def parse_http_addr(addr: str) -> tuple[str, int]:
    """``host:port`` / ``:port`` / ``[v6]:port`` -> (host, port); an empty host means all interfaces."""
    addr = addr.strip()
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        raise ValueError(f"http address {addr!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"http address {addr!r}: put IPv6 hosts in brackets")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"http address {addr!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"http address {addr!r}: port out of range")
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ProviderState) -> None:
        self.state = state
        super().__init__(address, _Handler)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "sscsi-e2e-provider"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        route = {
            "/rotation": self._rotation,
            "/validate-token-requests": self._audiences,
            "/fault": self._fault,
            "/healthz": self._healthz,
            "/state": self._state,
        }.get(url.path.rstrip("/") or "/")
        if route is None:
            self._reply(HTTPStatus.NOT_FOUND, "not found\n")
            return
        route(query)

    # routes ------------------------------------------------------------------
    def _rotation(self, query: dict[str, str]) -> None:
        value = query.get("rotated", "").strip().lower()
        if value not in ("true", "false"):
            self._reply(HTTPStatus.BAD_REQUEST, "rotated must be true or false\n")
            return
        self.server.state.set_rotation(value == "true")
        log.info("rotation set", extra={"rotated": value})
        self._reply(HTTPStatus.OK, f"rotation set to {value}\n")

    def _audiences(self, query: dict[str, str]) -> None:
        audiences = [a for a in query.get("audience", "").split(",") if a.strip()]
        self.server.state.set_required_audiences(audiences)
        current = self.server.state.required_audiences
        log.info("token audiences set", extra={"audiences": list(current)})
        if current:
            self._reply(HTTPStatus.OK, f"validating token audiences: {','.join(current)}\n")
        else:
            self._reply(HTTPStatus.OK, "token validation cleared\n")

    def _fault(self, query: dict[str, str]) -> None:
        try:
            fault = Fault.build(
                query.get("mode", "none"), code=query.get("code", ""), seconds=query.get("seconds", "")
            )
        except ValueError as exc:
            self._reply(HTTPStatus.BAD_REQUEST, f"{exc}\n")
            return
        self.server.state.set_fault(fault)
        log.info("fault set", extra={"mode": fault.mode.value, "code": fault.code, "seconds": fault.seconds})
        self._reply(HTTPStatus.OK, f"fault set to {fault.mode.value}\n")

    def _healthz(self, query: dict[str, str]) -> None:
        self._reply(HTTPStatus.OK, "ok\n")

    def _state(self, query: dict[str, str]) -> None:
        body: dict[str, Any] = self.server.state.snapshot()
        self._reply(HTTPStatus.OK, json.dumps(body) + "\n", content_type="application/json")

    # plumbing ----------------------------------------------------------------
    def _reply(
        self, status: HTTPStatus, body: str, *, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0], "line": format % args})


class ControlServer:
    """A `ThreadingHTTPServer` run on a background thread."""

    def __init__(self, state: ProviderState, addr: str = DEFAULT_HTTP_ADDR) -> None:
        host, port = parse_http_addr(addr)
        server_cls = _Server6 if ":" in host else _Server
        self._httpd = server_cls((host, port), state)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="provider-http", kwargs={"poll_interval": 0.2}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
