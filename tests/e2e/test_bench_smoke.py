"""The benchmark's smoke mode still runs end to end and reports every figure (timings are never judged)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.fixtures import BENCH, MANAGED_BY, RUN_LABEL
from bench.lock import bench_lock

TESTS_DIR = Path(__file__).resolve().parents[1]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_driver(name: str, base: dict[str, Any]) -> None:
    assert "error" not in base, f"{name}: {base.get('error')}\n{base.get('driver_log_tail', '')}"
    pub = base["publish"]["2"]
    assert pub["n"] == 2 and pub["ok"] == 2, pub["errors"]
    assert len(pub["latencies_ms"]) == 2
    assert all(_number(x) and x > 0 for x in pub["latencies_ms"])
    for key in ("p50_ms", "p99_ms", "max_ms", "pods_per_s"):
        assert _number(pub[key]) and pub[key] > 0, (name, key, pub[key])
    assert pub["provider_calls"] == 2
    for where in (base["baseline"], pub["memory_after"], base["steady"]["after_passes"]):
        assert 5 < where["rss_mib"] < 2048 and where["hwm_mib"] >= where["rss_mib"] - 0.01, where
    idle = base["steady"]["idle"]
    assert idle["seconds"] > 0 and idle["cpu_seconds"] >= 0 and 5 < idle["rss_mean_mib"] < 2048
    passes = base["rotation"]
    assert set(passes) == {"throttled", "unchanged", "changed"}
    for kind, entry in passes.items():  # a failed call is reported as itself, not as a missing refresh
        assert not entry["errors"], (name, kind, entry["errors"])
        assert _number(entry["duration_s"]) and entry["duration_s"] >= 0
    throttled = passes["throttled"]
    assert throttled["provider_calls"] == 0, (
        f"{name}: inside the rotation interval nothing is refreshed "
        f"(pass ended inside the interval: {throttled['inside_interval']})"
    )
    assert passes["unchanged"]["provider_calls"] == 2, name
    assert passes["changed"]["provider_calls"] == 2, name
    assert passes["changed"]["volumes_rotated"] == 2, "the rotated contents reached the volumes"
    for entry in passes.values():
        api = entry["apiserver"]
        if api is not None:  # counted from the audit log: a count, whatever it is
            assert isinstance(api["requests"], int) and api["requests"] >= 0
            assert sum(api["by_verb"].values()) == api["requests"]
    assert base["unpublish"]["ok"] == 2
    assert base["driver_alive"]


def _live(cluster: Any, kind: str, selector: str) -> list[str]:
    """Names of the objects of `kind` matching `selector` that are not being deleted."""
    got = cluster.kubectl("get", kind, "-l", selector, "-o", "json", timeout=30)
    assert got.returncode == 0, got.stderr
    items = json.loads(got.stdout)["items"]
    return [o["metadata"]["name"] for o in items if not o["metadata"].get("deletionTimestamp")]


@pytest.mark.timeout(240 + 900)  # + the longest wait for the bench lock
def test_bench_smoke_reports_every_figure(cluster: Any, crds: None, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(TESTS_DIR), str(TESTS_DIR.parent / "hack"), os.environ.get("PYTHONPATH", "")]
        ),
        SSCSI_CLUSTER_DIR=str(cluster.cluster_dir),  # where the audit log is
    )
    argv = ["-m", "bench", "--smoke", "--out", str(tmp_path), "--kubeconfig", str(cluster.kubeconfig)]
    # another run's namespace (same labels, other run id): a run deletes only its own objects
    decoy = f"b-other-run-{os.getpid()}"
    assert cluster.kubectl("create", "namespace", decoy).returncode == 0
    try:
        labels = (f"{MANAGED_BY}={BENCH}", f"{RUN_LABEL}=other")
        assert cluster.kubectl("label", "namespace", decoy, *labels).returncode == 0
        with bench_lock():  # a developer's bench on this machine must not run at the same time
            out = subprocess.run(
                [sys.executable, *argv],
                cwd=TESTS_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
        assert out.returncode == 0, f"stdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-4000:]}"
        assert _live(cluster, "namespaces", f"{RUN_LABEL}=other") == [decoy]
    finally:
        cluster.kubectl("delete", "namespace", decoy, "--wait=false")
    doc = json.loads((tmp_path / "latest-smoke.json").read_text())
    for kind in ("namespaces", "nodes"):  # the run's own are gone or terminating
        assert _live(cluster, kind, f"{RUN_LABEL}={doc['run_id']}") == [], kind

    assert doc["schema"] == 2 and doc["mode"] == "smoke" and doc["repeats"] == 1
    for key in ("cpus", "python", "kubernetes", "ours_version", "upstream_module"):
        assert doc["environment"].get(key), key
    assert doc["config"]["publish_sizes"] == [2]
    assert len(doc["runs"]) == 1  # one round in smoke mode; repeats are covered by tests/unit/bench
    results = doc["runs"][0]["drivers"]
    names = set(results)
    assert "ours" in names
    if "upstream" not in names:  # the binary is optional for `make test`
        assert "upstream" in doc["config"]["skipped"]
    for name in names:
        _check_driver(name, results[name]["base"])

    figures = doc["figures"]
    p50 = results["ours"]["base"]["publish"]["2"]["p50_ms"]
    assert figures["publish_2_p50_ms"]["ours"] == {
        "median": p50,
        "min": p50,
        "max": p50,
        "n": 1,
        "runs": [p50],
    }
    assert doc["median"]["ours"]["base"]["publish"]["2"]["p50_ms"] == p50
    assert all(f["verdict"] in ("won", "lost", "noisy", "equal", "1 run", "-") for f in figures.values())
    assert "error" in figures["rss_idle_mib"]["floor"]  # floors are probed in full runs only
    # the burst's request floor comes from the scenario: 2 SPCPS writes + 1 namespace's watch
    assert figures["publish_2_requests"]["floor"]["value"] == 3
    if "upstream" in names:
        assert _number(figures["publish_2_p50_ms"]["ratio"])
        assert _number(figures["rss_idle_mib"]["ratio"])
    assert {g["goal"] for g in doc["goals"]} >= {
        "publish p50 (N=2) <= upstream",
        "zero apiserver requests in an unchanged republish pass",
    }
    assert Path(doc["artifacts"]["json"]).exists()
    if doc["artifacts"]["png"]:
        assert Path(doc["artifacts"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib" in doc["artifacts"]["png_skipped"]
    assert "ours/up" in out.stdout and "verdict" in out.stdout  # the table
    assert "wall time" in out.stdout
