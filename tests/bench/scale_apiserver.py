"""The apiserver's side of the scale benchmark: its process (CPU, RSS), the watches it serves
(its own `apiserver_longrunning_requests` gauge) and the watches a driver holds open (audit log)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sscsi_kube import ApiError, KubeClient

from . import procstat
from .audit import AuditLog, Mark, Matcher

LONGRUNNING = "apiserver_longrunning_requests"


@dataclass(frozen=True)
class ApiserverProcess:
    """kube-apiserver started by hack/cluster-up.sh (its pid file is in <cluster dir>/pids)."""

    pid: int

    @classmethod
    def find(cls, cluster_dir: Path) -> ApiserverProcess | None:
        try:
            pid = int((cluster_dir / "pids" / "kube-apiserver.pid").read_text().strip())
            procstat.cpu_seconds(pid)
        except (OSError, ValueError):
            return None
        return cls(pid)

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def rss_mib(self) -> float:
        return round(procstat.memory(self.pid)[0] / procstat.MIB, 1)


class CpuMeter:
    """CPU seconds of a process between start() and stop(), as millicores over the wall time."""

    def __init__(self, proc: ApiserverProcess | None, clock: Any) -> None:
        self.proc, self.clock = proc, clock
        self.cpu0 = self.t0 = 0.0

    def start(self) -> CpuMeter:
        self.t0 = self.clock()
        self.cpu0 = self.proc.cpu_seconds() if self.proc else 0.0
        return self

    def stop(self) -> dict[str, float] | None:
        if self.proc is None:
            return None
        seconds = self.clock() - self.t0
        cpu = self.proc.cpu_seconds() - self.cpu0
        return {
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 3),
            "cpu_millicores": round(1000 * cpu / seconds, 1) if seconds > 0 else 0.0,
        }


async def served_watches(api: KubeClient) -> dict[str, int] | None:
    """The apiserver's own count of open WATCH requests (all clients), by resource."""
    try:
        text = await api.get_text("/metrics")
    except ApiError:
        return None
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith(LONGRUNNING + "{") or 'verb="WATCH"' not in line:
            continue
        labels, _, value = line.rpartition(" ")
        resource = ""
        for part in labels[labels.index("{") + 1 : labels.rindex("}")].split(","):
            key, _, val = part.partition("=")
            if key == "resource":
                resource = val.strip('"')
        with contextlib.suppress(ValueError):
            out[resource] += int(float(value))
    return dict(out)


def watch_summary(served: dict[str, int] | None) -> dict[str, int] | None:
    """All served watches, and those on the resources the drivers watch."""
    if served is None:
        return None
    kept = ("secretproviderclasses", "secretproviderclasspodstatuses", "pods", "secrets")
    return {"total": sum(served.values()), **{r: served.get(r, 0) for r in kept}}


def open_watches(audit: AuditLog, mark: Mark, matcher: Matcher) -> dict[str, Any]:
    """Watches a client opened since `mark` that have not ended yet (audit stages: a watch logs
    ResponseStarted when it opens and ResponseComplete when it ends), by resource."""
    opened: dict[str, str] = {}
    ended: set[str] = set()
    for chunk in audit._chunks(mark):
        for line in chunk.splitlines():
            if b'"watch"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("verb") != "watch" or not matcher(event):
                continue
            audit_id = str(event.get("auditID", ""))
            if event.get("stage") == "ResponseStarted":
                ref = event.get("objectRef") or {}
                opened[audit_id] = str(ref.get("resource", "?"))
            elif event.get("stage") in ("ResponseComplete", "Panic"):
                ended.add(audit_id)
    still = Counter(res for audit_id, res in opened.items() if audit_id not in ended)
    return {"open": sum(still.values()), "by_resource": dict(sorted(still.items())), "opened": len(opened)}
