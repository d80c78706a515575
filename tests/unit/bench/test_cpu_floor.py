"""bench.cpu_floor: the probe serves real gRPC calls in a fresh interpreter and reports its CPU seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bench import cpu_floor


def test_floors_are_measured_for_both_modes() -> None:
    floors = cpu_floor.cpu_floors(sys.executable, calls=40, repeats=1)
    assert set(floors) == set(cpu_floor.MODES)
    assert all(0 <= seconds < 30 for seconds in floors.values())


def test_the_probe_reports_the_calls_wall_time_too() -> None:
    cpu, wall = cpu_floor.grpc_seconds(sys.executable, "server", calls=20)
    assert 0 <= cpu < 30 and 0 < wall < 30


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        cpu_floor.grpc_cpu_seconds(sys.executable, "client")


def test_kube_floor_needs_a_reachable_apiserver(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    with pytest.raises(subprocess.CalledProcessError):
        cpu_floor.kube_cpu_seconds(sys.executable, str(kubeconfig), requests=2)
