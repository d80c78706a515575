"""Fixtures both provider test modules use: a fresh state, and the provider live on a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sscsi_provider.control import ControlServer
from sscsi_provider.server import start_grpc_server, stop_grpc_server
from sscsi_provider.service import ProviderService
from sscsi_provider.state import ProviderState


@pytest.fixture
def state() -> ProviderState:
    return ProviderState()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[ProviderState, Path, ControlServer]]:
    state = ProviderState()
    sock = tmp_path / "p.sock"
    server = start_grpc_server(ProviderService(state), sock, max_workers=4)
    control = ControlServer(state, "127.0.0.1:0")
    control.start()
    try:
        yield state, sock, control
    finally:
        control.stop()
        stop_grpc_server(server, sock, grace=0.5)
