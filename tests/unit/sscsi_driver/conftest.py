"""Fixtures shared by the driver's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from sscsi_proto import provider_pb2_grpc

from unit.sscsi_driver.fakes import ScriptedProvider
from unit.sscsi_driver.sync_world import World


@pytest.fixture(scope="module")
def provider_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ScriptedProvider]]:
    sock_dir = tmp_path_factory.mktemp("providers")
    servicer = ScriptedProvider()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    provider_pb2_grpc.add_CSIDriverProviderServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{sock_dir / 'scripted.sock'}")
    server.start()
    yield sock_dir, servicer
    server.stop(0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    yield w
    await w.syncer.stop()
    await w.events.drain()
