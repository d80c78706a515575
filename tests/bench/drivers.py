"""The two drivers under test, started the same way: same socket layout, provider directory,
apiserver, node name scheme, rotation flags and (default) log verbosity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import procstat

OURS = "ours"
UPSTREAM = "upstream"


@dataclass(frozen=True)
class DriverSpec:
    name: str
    binary: Path
    user_agent_prefix: str
    version: str
    # our driver refuses targets outside <kubelet root>/pods; upstream has no such flag
    takes_kubelet_root: bool

    @property
    def available(self) -> bool:
        return self.binary.exists() and os.access(self.binary, os.X_OK)


def ours_spec() -> DriverSpec:
    binary = Path(sys.executable).parent / "secrets-store-csi-driver"
    from sscsi_driver import __version__

    return DriverSpec(OURS, binary, "secrets-store-csi-py/driver/", __version__, takes_kubelet_root=True)


def upstream_spec(tools_bin: Path, version: str) -> DriverSpec:
    return DriverSpec(
        UPSTREAM,
        tools_bin / "upstream-secrets-store-csi-driver",
        "csi-secrets-store/",
        version,
        takes_kubelet_root=False,
    )


@dataclass(frozen=True)
class Selection:
    specs: dict[str, DriverSpec]
    order: list[str]  # the wanted drivers that can run, in the order asked for
    skipped: dict[str, str]  # driver -> why it cannot run


def select(wanted_csv: str, versions: dict[str, str]) -> Selection:
    """The drivers a run asked for (`--drivers ours,upstream`); upstream only when its binary is built."""
    tools_bin = Path(versions["TOOLS_CACHE"]) / "tools" / "bin"
    specs = {OURS: ours_spec()}
    upstream = upstream_spec(tools_bin, versions.get("UPSTREAM_DRIVER_VERSION", "?"))
    wanted = [d.strip() for d in wanted_csv.split(",") if d.strip()]
    skipped: dict[str, str] = {}
    if UPSTREAM in wanted:
        if upstream.available:
            specs[UPSTREAM] = upstream
        else:
            skipped[UPSTREAM] = f"{upstream.binary} not built (hack/build-tools.sh upstream-driver)"
            print(f"upstream driver skipped: {skipped[UPSTREAM]}", flush=True)
    return Selection(specs, [d for d in wanted if d in specs], skipped)


def binary_version(spec: DriverSpec) -> str:
    try:
        out = subprocess.run([str(spec.binary), "--version"], capture_output=True, text=True, timeout=30)
        return str(json.loads(out.stdout.strip().splitlines()[-1]).get("BuildVersion", spec.version))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return spec.version


@dataclass
class RunningDriver:
    spec: DriverSpec
    popen: subprocess.Popen[bytes]
    socket: Path
    log_path: Path
    started: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def memory_mib(self) -> tuple[float, float]:
        rss, hwm = procstat.memory(self.pid)
        return rss / procstat.MIB, hwm / procstat.MIB

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start(
    spec: DriverSpec,
    *,
    node: str,
    socket: Path,
    kubeconfig: Path,
    provider_dir: Path,
    kubelet_root: Path,
    metrics_port: int,
    rotation_interval: str,
    log_path: Path,
    timeout: float = 60.0,
) -> RunningDriver:
    """Start the driver as a DaemonSet would (rotation on, default verbosity), wait for its socket."""
    if socket.exists():
        socket.unlink()
    argv = [
        str(spec.binary),
        f"--endpoint=unix://{socket}",
        f"--nodeid={node}",
        f"--kubeconfig={kubeconfig}",
        f"--provider-volume={provider_dir}",
        f"--additional-provider-volume-paths={provider_dir}/extra",
        f"--metrics-addr=127.0.0.1:{metrics_port}",
        "--enable-secret-rotation=true",
        f"--rotation-poll-interval={rotation_interval}",
    ]
    if spec.takes_kubelet_root:
        argv.append(f"--kubelet-root-dir={kubelet_root}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    drv = RunningDriver(spec, popen, socket, log_path, time.monotonic())
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if not drv.alive():
            raise RuntimeError(f"{spec.name} driver exited ({popen.returncode}):\n{drv.log_tail()}")
        if time.monotonic() > deadline:
            drv.stop()
            raise TimeoutError(f"{spec.name} driver did not create {socket}:\n{drv.log_tail()}")
        time.sleep(0.02)
    return drv
