"""bench.cpu_floor: the probe serves real gRPC calls in a fresh interpreter and reports its CPU seconds."""

from __future__ import annotations

import sys

import pytest
from bench import cpu_floor


def test_floors_are_measured_for_both_modes() -> None:
    floors = cpu_floor.cpu_floors(sys.executable, calls=40, repeats=1)
    assert set(floors) == set(cpu_floor.MODES)
    assert all(0 <= seconds < 30 for seconds in floors.values())


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        cpu_floor.grpc_cpu_seconds(sys.executable, "client")
