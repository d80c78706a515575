"""Latency figures of one batch of gRPC calls (tests/harness/loadgen.py): percentiles, throughput."""

from __future__ import annotations

import statistics
from typing import Any

from harness.loadgen import Batch


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); exact on small samples, no interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def batch_stats(batch: Batch) -> dict[str, Any]:
    lat = [s * 1000 for s in batch.latencies]
    return {
        "n": len(batch.results),
        "ok": len(lat),
        "errors": batch.errors[:5],
        "p50_ms": round(percentile(lat, 50), 2),
        "p90_ms": round(percentile(lat, 90), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
        "wall_s": round(batch.wall_seconds, 3),
        "pods_per_s": round(len(lat) / batch.wall_seconds, 2) if batch.wall_seconds > 0 else None,
        "latencies_ms": [round(x, 2) for x in lat],
    }


def without_samples(batch: Batch) -> dict[str, Any]:
    """batch_stats without the per-call latencies (for batches whose samples nobody plots)."""
    return {k: v for k, v in batch_stats(batch).items() if k != "latencies_ms"}
