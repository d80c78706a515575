"""Resource faults: the kubelet root's filesystem full, memory pressure on the driver's container.

disk-full is produced only where it is safe: the kubelet root must be a filesystem of its own (not the
host's root filesystem, which the control planes, containerd's images and everything else share) and
small (at most FILL_LIMIT_BYTES), e.g. a loop-mounted image; then one file takes all its free space
until heal removes it. Elsewhere probe() names why it is skipped.

driver-memory-pressure lowers the memory limit of the driver container's own cgroup to its usage plus
HEADROOM_BYTES: cgroup v2 `memory.high` (the kernel reclaims and throttles above it), or v1
`memory.limit_in_bytes` (reclaim, then the OOM killer: kubelet restarts the container). While the fault
is active a driver container that replaces the limited one is limited too (never below the first
limit: a driver still starting uses less than it will); heal writes every saved value back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .faults import ChaosNode, FaultError
from .faults_host import cgroup_dir

FILL_NAME = ".sscsi-chaos-fill"
FILL_LIMIT_BYTES = 8 << 30
HEADROOM_BYTES = 8 << 20
KEEP_INTERVAL = 1.0
_CHUNK = 1 << 20


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


@dataclass
class DiskFull:
    ctx: ChaosNode
    max_seconds: float = 30.0
    kind: str = "disk-full"

    @property
    def fill_file(self) -> Path:
        return self.ctx.kubelet_root / FILL_NAME

    def probe(self) -> str | None:
        root = self.ctx.kubelet_root
        try:
            dev, host_dev = root.stat().st_dev, Path("/").stat().st_dev
            fs = os.statvfs(root)
        except OSError as err:
            return f"cannot inspect the kubelet root {root}: {err}"
        size = fs.f_blocks * fs.f_frsize
        if dev == host_dev:
            return (
                f"the kubelet root {root} is on the host's root filesystem ({_gib(size)}, shared with the "
                "control planes, containerd's images and all other work): filling it is not safe; a "
                f"dedicated filesystem of at most {_gib(FILL_LIMIT_BYTES)} at {root} (e.g. a loop-mounted "
                "image) makes this fault available"
            )
        if size > FILL_LIMIT_BYTES:
            limit = _gib(FILL_LIMIT_BYTES)
            return f"the kubelet root's filesystem is {_gib(size)}, more than the {limit} this fault fills"
        return None

    def inject(self) -> None:
        fs = os.statvfs(self.ctx.kubelet_root)
        free = fs.f_bavail * fs.f_frsize
        fd = os.open(self.fill_file, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, max(free, 1))
            except OSError as err:
                if err.errno not in (errno.ENOSPC, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                _fill_by_writing(fd)
            _fill_by_writing(fd)  # what fallocate's rounding left
        finally:
            os.close(fd)

    def heal(self) -> None:
        self.fill_file.unlink(missing_ok=True)


def _fill_by_writing(fd: int) -> None:
    os.lseek(fd, 0, os.SEEK_END)
    chunk = b"\0" * _CHUNK
    while True:
        try:
            if os.write(fd, chunk) == 0:
                return
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]
                continue
            raise


def memory_limit_file(cgroup: Path) -> tuple[Path, Path] | None:
    """(limit file, usage file) of a memory cgroup: v2 memory.high/current, v1 limit_in_bytes/usage."""
    for limit, usage in (
        ("memory.high", "memory.current"),
        ("memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        if (cgroup / limit).is_file() and (cgroup / usage).is_file():
            return cgroup / limit, cgroup / usage
    return None


def _driver_files(pid: int) -> tuple[Path, Path]:
    cgroup = cgroup_dir(pid, "memory")
    files = memory_limit_file(cgroup) if cgroup else None
    if files is None:
        raise FaultError(
            f"the driver container's memory cgroup ({cgroup}) has neither memory.high (cgroup v2) "
            "nor memory.limit_in_bytes (v1)"
        )
    return files


@dataclass
class DriverMemoryPressure:
    """While active, every driver container that runs gets the limit: a keeper thread limits a new one
    (after a kill, an OOM kill or a rollout) within KEEP_INTERVAL, and an inject while no driver runs
    returns at once. Heal writes back each limit file's saved value."""

    ctx: ChaosNode
    max_seconds: float = 30.0
    kind: str = "driver-memory-pressure"
    _saved: dict[Path, str] = field(default_factory=dict, init=False)  # limit file -> its value before
    _active: bool = field(default=False, init=False)
    _floor: int = field(default=0, init=False)  # the highest limit this injection has set
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _keeper: threading.Thread | None = field(default=None, init=False)

    def probe(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root to write the driver container's cgroup"
        try:
            _driver_files(self.ctx.wait_container(self.ctx.driver, 10.0).pid)
        except FaultError as err:
            return str(err)
        return None

    def inject(self) -> None:
        with self._lock:
            self._active = True
            self._limit_running()
            if self._keeper is None or not self._keeper.is_alive():
                self._keeper = threading.Thread(target=self._hold, name="driver-memory", daemon=True)
                self._keeper.start()

    def heal(self) -> None:
        with self._lock:
            self._active, self._floor = False, 0
            saved, self._saved = self._saved, {}
            for limit, original in saved.items():
                try:
                    limit.write_text(f"{original}\n")
                except OSError as err:
                    if limit.parent.exists():
                        raise FaultError(f"could not restore {limit} to {original}: {err}") from err
                    # the container was replaced (e.g. OOM-killed): its new cgroup has no limit of ours

    def _limit_running(self) -> None:
        for driver in self.ctx.containers(self.ctx.driver):
            limit, usage = _driver_files(driver.pid)
            if limit in self._saved:
                continue
            original = limit.read_text().strip()
            # A driver that is still starting uses less than it will: never below the first limit set.
            self._floor = max(self._floor, int(usage.read_text().strip()) + HEADROOM_BYTES)
            limit.write_text(f"{self._floor}\n")
            self._saved[limit] = original

    def _hold(self) -> None:
        while True:
            time.sleep(KEEP_INTERVAL)
            with self._lock:
                if not self._active:
                    return
                with contextlib.suppress(FaultError, OSError):  # a container going away meanwhile
                    self._limit_running()
