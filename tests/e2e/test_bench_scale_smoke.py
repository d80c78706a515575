"""`python -m bench.scale --smoke` runs the three scale parts end to end (a 3-pod x 2-volume node, clusters
of 1 and 2 simulated nodes, a 20 s soak) and reports every figure; timings are never judged."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.lock import bench_lock

TESTS_DIR = Path(__file__).resolve().parents[1]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_node(name: str, r: dict[str, Any]) -> None:
    assert "error" not in r, f"{name}: {r.get('error')}\n{r.get('driver_log_tail', '')}"
    pub = r["publish"]
    assert r["pods"] == 3 and r["volumes_per_pod"] == 2
    assert pub["volumes"] == pub["n"] == pub["ok"] == 6, pub["errors"]
    assert pub["volumes_with_files"] == 6 and pub["provider_calls"] == 6
    assert _number(pub["p99_ms"]) and _number(pub["driver"]["cpu_seconds"])
    assert 5 < r["steady"]["idle"]["rss_mean_mib"] < 2048
    assert r["rotation"]["changed"]["volumes_rotated"] == 6, (
        "rotated contents reached both volumes of each pod"
    )
    assert r["unpublish"]["ok"] == 6 and r["driver_alive"]


def _check_cluster(name: str, m: int, r: dict[str, Any]) -> None:
    assert "error" not in r, f"{name} M={m}: {r.get('error')}\n{r.get('driver_log_tail', '')}"
    volumes = m * 2
    assert r["nodes"] == m and r["publish"]["ok"] == r["publish"]["n"] == volumes, r["publish"]["errors"]
    idle, wave = r["idle"], r["wave"]
    assert idle["drivers_alive"] == m, "one driver process per simulated node"
    assert wave["ok"] == volumes and wave["volumes_rotated"] == volumes
    if idle["apiserver"] is not None:  # counted from the audit log: counts, whatever they are
        assert _number(idle["requests_per_min_per_node"]) and idle["requests_per_min_per_node"] >= 0
        assert isinstance(wave["apiserver"]["requests"], int) and wave["requests_per_node"] >= 0
        assert idle["watches"]["open"] >= 1, "each driver keeps at least one watch open"
    if idle["apiserver_cpu"] is not None:
        assert idle["apiserver_cpu"]["cpu_seconds"] >= 0 and idle["apiserver_rss_mib"] > 0


def _check_soak(name: str, r: dict[str, Any]) -> None:
    assert "error" not in r, f"{name}: {r.get('error')}\n{r.get('driver_log_tail', '')}"
    counts = r["counts"]
    assert not r["errors"], r["errors"]
    assert counts["created"] >= 2 and counts["published"] == counts["created"]
    assert counts["deleted"] == counts["created"], "every churned pod was unpublished and deleted"
    assert counts["unpublished"] == counts["published"]
    samples = r["samples"]
    assert len(samples) >= 3
    for s in samples:
        assert s["rss_mib"] > 5 and s["fds"] > 0 and s["threads"] >= 1
    if name == "ours":  # bench.task_probe counts the driver's asyncio tasks
        assert any(isinstance(s["tasks"], int) and s["tasks"] > 0 for s in samples), samples
    a = r["analysis"]
    assert _number(a["rss_slope_mib_per_10min"]) and isinstance(a["flat"], bool)
    assert a["fds"]["baseline"] > 0 and r["driver_alive"]


@pytest.mark.timeout(420 + 900)  # + the longest wait for the bench lock
def test_bench_scale_smoke_reports_every_part(cluster: Any, crds: None, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(TESTS_DIR), str(TESTS_DIR.parent / "hack"), os.environ.get("PYTHONPATH", "")]
        ),
        SSCSI_CLUSTER_DIR=str(cluster.cluster_dir),  # where the audit log and the apiserver's pid are
    )
    argv = ["-m", "bench.scale", "--smoke", "--out", str(tmp_path), "--kubeconfig", str(cluster.kubeconfig)]
    with bench_lock():  # a developer's bench on this machine must not run at the same time
        out = subprocess.run(
            [sys.executable, *argv], cwd=TESTS_DIR, env=env, capture_output=True, text=True, timeout=400
        )
    assert out.returncode == 0, f"stdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-4000:]}"
    doc = json.loads((tmp_path / "latest-scale-smoke.json").read_text())

    assert doc["mode"] == "scale-smoke" and doc["config"]["cluster_sizes"] == [1, 2]
    names = set(doc["config"]["drivers"])
    assert "ours" in names
    if "upstream" not in names:  # the binary is optional for `make test`
        assert "upstream" in doc["config"]["skipped"]
    for name in names:
        _check_node(name, doc["node"][name])
        for m in (1, 2):
            _check_cluster(name, m, doc["cluster"][name][str(m)])
        _check_soak(name, doc["soak"][name])
    verdicts = doc["flat_at_cluster_scale"]
    if doc["cluster"]["ours"]["1"]["idle"]["apiserver"] is not None:
        assert set(verdicts) == names
        assert all(isinstance(v["flat"], bool) for v in verdicts.values())
    if doc["artifacts"]["png"]:
        assert Path(doc["artifacts"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib" in doc["artifacts"]["png_skipped"]
    for heading in ("== node at its limits", "== cluster", "== soak", "flat at cluster scale (ours)"):
        assert heading in out.stdout
