"""Entry point of ``secrets-store-csi-e2e-provider``.

Serves the provider API on a unix socket and the HTTP control endpoints, until
SIGTERM or SIGINT; then stops both and removes the socket.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sscsi_provider import logs
from sscsi_provider.control import DEFAULT_HTTP_ADDR, ControlServer, parse_http_addr
from sscsi_provider.server import (
    DEFAULT_ENDPOINT,
    EndpointError,
    socket_path_from_endpoint,
    start_grpc_server,
    stop_grpc_server,
)
from sscsi_provider.service import RUNTIME_NAME, RUNTIME_VERSION, ProviderService
from sscsi_provider.state import ProviderState

log = logging.getLogger("sscsi_provider")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secrets-store-csi-e2e-provider",
        description="Reference Secrets Store CSI provider, compatible with the upstream e2e provider.",
    )
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help="unix socket to serve the provider API on: unix:///abs/path or a path (default %(default)s)",
    )
    parser.add_argument(
        "--http-addr",
        default=DEFAULT_HTTP_ADDR,
        help="host:port of the HTTP control server; empty host = all interfaces, port 0 = any "
        "(default %(default)s)",
    )
    parser.add_argument("--log-format-json", action="store_true", help="log one JSON object per line")
    return parser


def serve(args: argparse.Namespace, stop: threading.Event) -> int:
    """Run until `stop` is set; returns the process exit code."""
    try:
        socket_path = socket_path_from_endpoint(args.endpoint)
        parse_http_addr(args.http_addr)
    except ValueError as exc:
        log.error("invalid arguments", extra={"error": str(exc)})
        return 2

    state = ProviderState()
    service = ProviderService(state)
    try:
        control = ControlServer(state, args.http_addr)
    except OSError as exc:
        log.error("cannot start http control server", extra={"addr": args.http_addr, "error": str(exc)})
        return 1
    try:
        grpc_server = start_grpc_server(service, socket_path)
    except (EndpointError, OSError) as exc:
        control.stop()
        log.error("cannot start grpc server", extra={"endpoint": args.endpoint, "error": str(exc)})
        return 1

    control.start()
    log.info(
        "provider started",
        extra={
            "runtime": RUNTIME_NAME,
            "runtime_version": RUNTIME_VERSION,
            "socket": str(socket_path),
            "http_host": control.host,
            "http_port": control.port,
        },
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("shutting down")
        control.stop()
        stop_grpc_server(grpc_server, socket_path)
        log.info("stopped", extra={"mount_calls": state.mount_calls})
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.setup(json_format=args.log_format_json)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.exit(serve(args, stop))


if __name__ == "__main__":
    main()
