"""Fixtures shared by the driver's unit tests."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from sscsi_driver import main
from sscsi_driver.config import Config, parse_config
from sscsi_driver.metrics import Metrics
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
    await w.stop()


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


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    """A driver whose apiserver refuses connections (port 1): caches retry in the background."""
    monkeypatch.setattr(main, "Metrics", lambda: Metrics(CollectorRegistry()))  # one run per process
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    (tmp_path / "providers").mkdir()
    config, _ = parse_config(
        [
            f"--endpoint=unix://{tmp_path}/csi/csi.sock",
            "--nodeid=node-a",
            f"--kubeconfig={kubeconfig}",
            f"--provider-volume={tmp_path}/providers",
            f"--kubelet-root-dir={tmp_path}/kubelet",
            "--metrics-addr=127.0.0.1:0",
            "--provider-health-check=true",
        ]
    )
    yield config
