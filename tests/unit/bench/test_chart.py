"""bench.chart: the PNG draws every run's latencies pooled and each figure's median with its range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import chart, report
from bench.row_floors import Probes


def one_driver(scale: float) -> dict[str, Any]:
    publish = {"p50_ms": 10 * scale, "latencies_ms": [9 * scale, 10 * scale, 12 * scale]}
    passes = {
        k: {"duration_s": scale, "driver": {"cpu_seconds": 0.1 * scale}, "apiserver": {"requests": 0}}
        for k in ("throttled", "unchanged", "changed")
    }
    return {
        "base": {
            "publish": {"2": publish},
            "baseline": {"rss_mib": 50 * scale},
            "steady": {"idle": {"rss_mean_mib": 55 * scale}, "republish_peak_rss_mib": 56 * scale},
            "rotation": passes,
        }
    }


def test_chart_writes_a_png_with_spreads_and_floors(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [{"drivers": {"ours": one_driver(s), "upstream": one_driver(s * 2)}} for s in (1.0, 1.1, 0.9)]
    rows = report.figure_rows((2,), large=False, scale=False)
    floors = report.floor_spreads([{"grpcio+protobuf": 30.0, "driver-imports": 45.0}])
    cpu = report.floor_spreads([{"calls": 2.0, "server_cpu_s": 0.05, "server+client_cpu_s": 0.08}])
    doc = {
        "runs": runs,
        "repeats": 3,
        "mode": "full",
        "config": {"publish_sizes": [2]},
        "figures": report.figures([r["drivers"] for r in runs], rows, Probes(floors, cpu)),
        "floors": {"summary": {k: v.as_dict() for k, v in floors.items()}},
    }
    pooled = chart.pooled_latencies(
        [r["drivers"] for r in runs], "ours", "base", "publish", "2", "latencies_ms"
    )
    assert pooled == pytest.approx([9, 10, 12, 9.9, 11, 13.2, 8.1, 9, 10.8])  # every run, in run order
    assert report.dig(doc, "figures", "changed_pass_cpu_s", "floor", "value") == 0.08  # drawn as a tick
    png = tmp_path / "out.png"
    assert chart.chart(doc, png) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
