"""Invariant 4: the driver process's RSS, open fds and threads, sampled on the host (bench.procstat).

The driver runs in its DaemonSet's container; on the host it is the process whose command line runs
`secrets-store-csi-driver` (the image's entry point). A driver killed by a fault comes back as another
pid, so the pid is looked up again at every sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench import procstat

from .bounds import FDS_LIMIT, RSS_LIMIT_MIB, THREADS_LIMIT

ENTRY_POINT = "secrets-store-csi-driver"


@dataclass(frozen=True, slots=True)
class DriverSample:
    pid: int
    rss_mib: float
    fds: int
    threads: int

    def over_limits(self) -> list[str]:
        out = []
        if self.rss_mib > RSS_LIMIT_MIB:
            out.append(f"RSS {self.rss_mib:.1f} MiB > {RSS_LIMIT_MIB:.0f} MiB")
        if self.fds > FDS_LIMIT:
            out.append(f"{self.fds} fds > {FDS_LIMIT}")
        if self.threads > THREADS_LIMIT:
            out.append(f"{self.threads} threads > {THREADS_LIMIT}")
        return out


def driver_pids() -> list[int]:
    """Host pids of processes running the driver's entry point (python3 .../secrets-store-csi-driver)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:2]
        except OSError:
            continue
        if any(os.path.basename(a.decode(errors="replace")) == ENTRY_POINT for a in argv):
            pids.append(int(entry.name))
    return sorted(pids)


def sample() -> DriverSample | None:
    """The driver's figures now (the largest process when a rollout runs two); None when none runs."""
    found: list[DriverSample] = []
    for pid in driver_pids():
        try:
            rss, _ = procstat.memory(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            found.append(DriverSample(pid, rss / procstat.MIB, fds, procstat.threads(pid)))
        except OSError:
            continue
    return max(found, key=lambda s: s.rss_mib, default=None)
