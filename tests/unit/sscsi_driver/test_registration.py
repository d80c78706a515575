"""The driver's own kubelet registration, spoken to as kubelet does: over the real unix socket."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from sscsi_driver import main
from sscsi_driver.config import Config
from sscsi_driver.registration import KubeletRegistration, registration_socket
from sscsi_proto import pluginregistration_pb2 as reg_pb2
from sscsi_proto import pluginregistration_pb2_grpc as reg_grpc

KUBELET_ENDPOINT = "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A unix socket path must stay under 108 bytes: pytest's tmp_path is too deep for this name."""
    with tempfile.TemporaryDirectory(prefix="reg-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
async def registration(short_dir: Path) -> AsyncIterator[KubeletRegistration]:
    reg = KubeletRegistration(
        registration_socket(short_dir / "plugins_registry", "secrets-store.csi.k8s.io"),
        "secrets-store.csi.k8s.io",
        KUBELET_ENDPOINT,
        first_retry=0.05,
        max_retry=0.2,
    )
    await reg.start()
    yield reg
    await reg.stop()


async def _get_info(path: Path) -> reg_pb2.PluginInfo:
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        return await reg_grpc.RegistrationStub(channel).GetInfo(reg_pb2.InfoRequest(), timeout=5)


async def _notify(path: Path, registered: bool, error: str = "") -> None:
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        status = reg_pb2.RegistrationStatus(plugin_registered=registered, error=error)
        await reg_grpc.RegistrationStub(channel).NotifyRegistrationStatus(status, timeout=5)


def _identity(path: Path) -> tuple[int, int] | None:
    """Which socket file is there: a new one may reuse the inode number, not also its creation time."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_ctime_ns


async def _wait_for_new_socket(path: Path, old: tuple[int, int]) -> tuple[int, int]:
    """Until a new socket file is there and answers: gRPC creates the file when it binds, before it
    listens, so a call in between is refused (kubelet's plugin watcher dials blocking, with a timeout)."""
    for _ in range(1000):
        now = _identity(path)
        if now is not None and now != old:
            try:
                await _get_info(path)
            except grpc.aio.AioRpcError:
                pass
            else:
                return now
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} was not created again, or does not answer")


async def test_kubelet_learns_the_plugin_and_its_csi_socket(registration: KubeletRegistration) -> None:
    path = registration.socket_path
    assert path.name == "secrets-store.csi.k8s.io-reg.sock"
    info = await _get_info(path)
    assert (info.type, info.name) == ("CSIPlugin", "secrets-store.csi.k8s.io")
    assert info.endpoint == KUBELET_ENDPOINT
    assert list(info.supported_versions) == ["1.0.0"]
    assert registration.registered is False
    await _notify(path, True)
    assert registration.registered is True


async def test_a_refused_registration_recreates_the_socket_instead_of_exiting(
    registration: KubeletRegistration, caplog: pytest.LogCaptureFixture
) -> None:
    path = registration.socket_path
    await _notify(path, True)
    first = _identity(path)
    assert first is not None
    caplog.set_level(logging.INFO, "sscsi_driver.registration")
    await _notify(path, False, "error updating CSINode: connection refused")
    assert registration.registered is False
    second = await _wait_for_new_socket(path, first)  # kubelet's plugin watcher sees a new plugin
    info = await _get_info(path)  # and the new socket answers as the old one did
    assert info.name == "secrets-store.csi.k8s.io"
    await _notify(path, False, "still no apiserver")
    await _wait_for_new_socket(path, second)  # refused again: created again, never given up
    await _notify(path, True)
    assert registration.registered is True
    refusals = [r for r in caplog.records if r.getMessage().startswith("kubelet refused the registration")]
    assert [getattr(r, "error", None) for r in refusals] == [
        "error updating CSINode: connection refused",
        "still no apiserver",
    ]
    assert [getattr(r, "retry_in_s", None) for r in refusals] == [0.05, 0.1]  # backing off


async def test_stop_removes_the_socket_so_kubelet_deregisters(short_dir: Path) -> None:
    path = registration_socket(short_dir, "secrets-store.csi.k8s.io")
    path.write_text("left by a killed driver")  # a stale file from the previous container
    reg = KubeletRegistration(path, "secrets-store.csi.k8s.io", KUBELET_ENDPOINT)
    await reg.start()
    assert (await _get_info(path)).name == "secrets-store.csi.k8s.io"
    await reg.stop()
    assert not path.exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code


async def test_driver_is_ready_once_kubelet_confirmed_registration(
    cfg: Config, tmp_path: Path, short_dir: Path
) -> None:
    port = _free_port()
    cfg = dataclasses.replace(
        cfg,
        metrics_addr=f"127.0.0.1:{port}",
        kubelet_registration_path=KUBELET_ENDPOINT,
        plugin_registration_dir=short_dir,
    )
    reg_sock = short_dir / "secrets-store.csi.k8s.io-reg.sock"
    running = asyncio.create_task(main.run(cfg))
    for _ in range(250):
        if reg_sock.exists():
            break
        await asyncio.sleep(0.02)
    assert reg_sock.exists(), "the registration socket never appeared"
    assert (tmp_path / "csi" / "csi.sock").exists()  # kubelet dials the CSI socket next: it is up first
    assert await asyncio.to_thread(_readyz, port) == 503
    assert (await _get_info(reg_sock)).endpoint == KUBELET_ENDPOINT
    await _notify(reg_sock, True)
    assert await asyncio.to_thread(_readyz, port) == 200
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, 20)
    assert not reg_sock.exists()
