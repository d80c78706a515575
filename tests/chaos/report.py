"""The run's outputs: the one summary line, history.json and timeline.png in the results directory.

The PNG uses matplotlib as the bench's chart does (Agg backend; no PNG, and the reason, when
matplotlib is not installed): one bar per fault kind over time, a red mark per violation on the row of
its invariant, and below it the driver's RSS, fds and threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bounds import Interval
from .history import History


@dataclass(frozen=True, slots=True)
class Summary:
    seed: int
    faults: Mapping[str, int]
    pods: int
    minutes: float
    rotations: int
    violations: int
    bytes_lost: int
    converged_s: float | None

    def line(self) -> str:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(self.faults.items()))
        rate = self.pods / self.minutes if self.minutes > 0 else 0.0
        converged = f"{self.converged_s:.0f}s" if self.converged_s is not None else "never"
        return (
            f"chaos: seed={self.seed} faults={sum(self.faults.values())} ({kinds}) pods={self.pods}"
            f" pods/min={rate:.1f} rotations={self.rotations} invariant violations={self.violations}"
            f" bytes lost={self.bytes_lost} converged in {converged}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "faults": dict(self.faults),
            "pods": self.pods,
            "minutes": round(self.minutes, 2),
            "rotations": self.rotations,
            "violations": self.violations,
            "bytes_lost": self.bytes_lost,
            "converged_seconds": self.converged_s,
            "line": self.line(),
        }


def timeline(history: History, intervals: Sequence[Interval], path: Path, title: str) -> str | None:
    """Writes the PNG; returns why not (matplotlib absent) or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    end = history.now()
    kinds = sorted({i.kind for i in intervals})
    rows = [*kinds, *(f"invariant {n}" for n in range(1, 7))]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 3 + 0.35 * len(rows)), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for i in intervals:
        y = rows.index(i.kind)
        stop = end if i.end is None else i.end
        top.broken_barh([(i.start, max(0.5, stop - i.start))], (y - 0.35, 0.7), color="#3572A5")
    violations = history.violations()
    for v in violations:
        y = rows.index(f"invariant {v.detail.get('invariant', 6)}")
        top.plot([v.t], [y], marker="x", color="#D62728", markersize=8, linestyle="none")
    top.set_yticks(range(len(rows)), rows, fontsize=8)
    top.invert_yaxis()
    top.set_title(f"{title}: faults (bars) and violations ({len(violations)}, red x)")
    top.grid(axis="x", alpha=0.3)

    samples = history.of_kind("driver")
    ts = [s.t for s in samples]
    bottom.plot(ts, [s.detail["rss_mib"] for s in samples], label="driver RSS (MiB)", color="#3572A5")
    bottom.plot(ts, [s.detail["fds"] for s in samples], label="fds", color="#2CA02C")
    bottom.plot(ts, [s.detail["threads"] for s in samples], label="threads", color="#FF7F0E")
    bottom.set_xlabel("seconds since the run started")
    bottom.legend(fontsize=8, loc="upper left")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
