"""Prometheus metrics with upstream's names and labels, plus a liveness endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import REGISTRY

OS_TYPE = "linux"
# upstream: ExponentialBucketsRange(0.1, 2, 11)
_BUCKETS = tuple(round(0.1 * (20 ** (i / 10)), 6) for i in range(11))

disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.registry = registry
        self.node_publish = counter(
            "node_publish", "Successful NodePublishVolume calls", ["provider", "os_type"]
        )
        self.node_unpublish = counter("node_unpublish", "Successful NodeUnpublishVolume calls", ["os_type"])
        self.node_publish_error = counter(
            "node_publish_error", "Failed NodePublishVolume calls", ["provider", "error_type", "os_type"]
        )
        self.node_unpublish_error = counter(
            "node_unpublish_error", "Failed NodeUnpublishVolume calls", ["os_type"]
        )
        self.sync_k8s_secret = counter(
            "sync_k8s_secret", "Kubernetes Secrets synced", ["provider", "os_type"]
        )
        self.k8s_secret_duration = Histogram(
            "k8s_secret_duration_sec",
            "Duration of a Secret sync",
            ["os_type"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.rotation_reconcile = counter(
            "rotation_reconcile", "Volume refreshes attempted", ["provider", "os_type", "rotated"]
        )
        self.rotation_reconcile_error = counter(
            "rotation_reconcile_error",
            "Volume refreshes failed",
            ["provider", "error_type", "os_type", "rotated"],
        )
        # Our addition: Secrets that secret sync leaves alone on purpose (see sync_ownership).
        self.sync_k8s_secret_refused = Gauge(
            "sync_k8s_secret_refused",
            "Mounted volumes whose secretObject is not synced: an existing Secret the driver did not "
            "create (reason unmanaged) or owned by another SecretProviderClass's definition (conflict)",
            ["namespace", "secret", "secret_provider_class", "reason"],
            registry=registry,
        )
        self.rotation_reconcile_duration = Histogram(
            "rotation_reconcile_duration_sec",
            "Duration of a volume refresh",
            ["os_type"],
            buckets=_BUCKETS,
            registry=registry,
        )


class Heartbeat:
    """The event loop beats; /healthz fails when it stops beating (a wedged loop)."""

    def __init__(self, max_age: float = 30.0) -> None:
        self.max_age = max_age
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    @property
    def healthy(self) -> bool:
        return time.monotonic() - self.last < self.max_age


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def serve(
    addr: str, registry: CollectorRegistry, heartbeat: Heartbeat, ready: Callable[[], bool] = lambda: True
) -> WSGIServer:
    """Serve /metrics, /healthz and /readyz on `addr` (`:8095`, `127.0.0.1:0`) in a daemon thread.
    /readyz fails until kubelet confirmed the driver's registration (when the driver registers itself)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path in ("/healthz", "/livez", "/readyz"):
            problem = "" if heartbeat.healthy else "event loop stalled"
            if path == "/readyz" and not problem and not ready():
                problem = "not registered with kubelet yet"
            status = "503 Service Unavailable" if problem else "200 OK"
            start_response(status, [("Content-Type", "text/plain")])
            return [(problem or "ok").encode()]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    host, _, port = addr.rpartition(":")
    server = make_server(host or "0.0.0.0", int(port), app, ThreadingWSGIServer, handler_class=_QuietHandler)  # noqa: S104
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
