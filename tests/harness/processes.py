"""Start the driver and the reference provider as real processes, with logs in files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _start(name: str, argv: Sequence[str], log_dir: Path) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    return Process(name, popen, log_path)


def _wait_for(path: Path, proc: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}); log:\n{proc.log()[-3000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not create {path} within {timeout}s; log:\n{proc.log()[-3000:]}")


def start_provider(
    provider_dir: Path, log_dir: Path, *, http_port: int, name: str = "e2e-provider"
) -> Process:
    sock = provider_dir / f"{name}.sock"
    proc = _start(
        name,
        [
            str(BIN / "secrets-store-csi-e2e-provider"),
            f"--endpoint=unix://{sock}",
            f"--http-addr=127.0.0.1:{http_port}",
        ],
        log_dir,
    )
    _wait_for(sock, proc, 20)
    return proc


def start_driver(
    *,
    socket_path: Path,
    kubeconfig: Path,
    node: str,
    provider_dir: Path,
    kubelet_root: Path,
    log_dir: Path,
    metrics_port: int,
    rotation: bool = False,
    rotation_interval: str = "2m",
    extra: Sequence[str] = (),
    name: str = "driver",
    env: dict[str, str] | None = None,
) -> Process:
    if socket_path.exists():
        socket_path.unlink()
    argv = [
        str(BIN / "secrets-store-csi-driver"),
        f"--endpoint=unix://{socket_path}",
        f"--nodeid={node}",
        f"--kubeconfig={kubeconfig}",
        f"--provider-volume={provider_dir}",
        f"--additional-provider-volume-paths={provider_dir}/extra",
        f"--metrics-addr=127.0.0.1:{metrics_port}",
        f"--kubelet-root-dir={kubelet_root}",
        f"--enable-secret-rotation={'true' if rotation else 'false'}",
        f"--rotation-poll-interval={rotation_interval}",
        "-v=5",
        *extra,
    ]
    if env:
        os.environ.update(env)
    proc = _start(name, argv, log_dir)
    _wait_for(socket_path, proc, 30)
    return proc
