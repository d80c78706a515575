"""Memory and CPU of one process, from /proc (no dependencies, same for Go and Python)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """utime + stime of all threads, plus children already waited for (upstream runs mount(8))."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def status_fields(pid: int, *names: str) -> dict[str, int]:
    """Numeric fields of /proc/<pid>/status, kB values in bytes (e.g. RssAnon, RssFile, Threads)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in names:
                parts = rest.split()
                out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


@dataclass
class Window:
    """CPU and RSS of a process over a stretch of time, RSS sampled by a background thread."""

    pid: int
    interval: float = 0.05
    started: float = 0.0
    cpu_start: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0
    rss_samples: list[int] = field(default_factory=list)
    hwm_end: int = 0
    rss_end: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Window:
        self.started = time.monotonic()
        self.cpu_start = cpu_seconds(self.pid)
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss_samples.append(memory(self.pid)[0])
            except OSError:
                return
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.seconds = time.monotonic() - self.started
        try:
            self.cpu = cpu_seconds(self.pid) - self.cpu_start
            self.rss_end, self.hwm_end = memory(self.pid)
        except OSError:
            pass

    @property
    def rss_peak(self) -> int:
        return max([*self.rss_samples, self.rss_end])

    @property
    def rss_mean(self) -> float:
        samples = self.rss_samples or [self.rss_end]
        return sum(samples) / len(samples)

    @property
    def millicores(self) -> float:
        return 1000.0 * self.cpu / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu, 3),
            "cpu_millicores": round(self.millicores, 1),
            "rss_mean_mib": round(self.rss_mean / MIB, 2),
            "rss_peak_mib": round(self.rss_peak / MIB, 2),
            "rss_end_mib": round(self.rss_end / MIB, 2),
            "hwm_mib": round(self.hwm_end / MIB, 2),
        }
