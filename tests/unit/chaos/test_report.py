"""chaos.report: the summary line's format, and the timeline PNG."""

from __future__ import annotations

from pathlib import Path

from chaos.bounds import Interval
from chaos.history import History
from chaos.report import Summary, timeline


def test_summary_line() -> None:
    s = Summary(
        7,
        {"driver-kill": 2, "disk-full": 1},
        pods=30,
        minutes=2.0,
        rotations=90,
        violations=0,
        bytes_lost=0,
        converged_s=12.4,
    )
    assert s.line() == (
        "chaos: seed=7 faults=3 (disk-full=1, driver-kill=2) pods=30 pods/min=15.0 rotations=90"
        " invariant violations=0 bytes lost=0 converged in 12s"
    )


def test_timeline_png(tmp_path: Path) -> None:
    history = History()
    history.record("driver", pid=1, rss_mib=60.0, fds=20, threads=9)
    history.violation(1, "volume content", volume="ns/p/v")
    out = tmp_path / "t.png"
    assert (
        timeline(history, [Interval("driver-kill", 0.0, 1.0), Interval("disk-full", 0.5, None)], out, "x")
        is None
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
