"""Fixtures shared by the driver's unit tests."""

from __future__ import annotations

import subprocess
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


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (PEM): (key, cert)."""
    d = tmp_path_factory.mktemp("pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
         "-keyout", str(d / "k"), "-out", str(d / "c")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (d / "k").read_bytes(), (d / "c").read_bytes()
