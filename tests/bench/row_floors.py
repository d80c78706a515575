"""Floors beside the rows upstream may win: what any Python node plugin pays for the same work,
measured in the same run by committed probes (or, for request counts, computed from the scenario).

- `RssFloor`: a fresh interpreter importing a set of modules (floors.py; grpcio+protobuf for the rows).
- `GrpcFloor`: a bare grpc.aio server in a fresh interpreter answering the row's N NodePublishVolume-sized
  calls (cpu_floor.py), in mode "server" (answered at once: the throttled pass) or "server+client" (each
  call also awaits one call to another process: a pass or burst asking the provider); "cpu" rows add, per
  apiserver request our driver sent in that row, the CPU of one GET through sscsi_kube's client; "wall"
  rows take the N calls' wall time seen from a Python client (the bench's load generator is one too).
- `RequestFloor`: one SPCPS write per volume and one watch per namespace holding volumes: what a driver
  whose caches are scoped to its node sends for a burst (upstream caches every SPC of the cluster from its
  start, so its burst has no watch in it; a node must not cache the whole cluster's SPCs, issue 15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import stats
from .stats import Spread

KUBE_REQUEST_MS = "kube_request_cpu_ms"  # as cpu_floor.KUBE_REQUEST_MS (not imported: no subprocess here)
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class RssFloor:
    probe: str  # a key of floors.FLOOR_IMPORTS


@dataclass(frozen=True)
class GrpcFloor:
    mode: str  # cpu_floor.MODES: "server" or "server+client"
    measure: str = "cpu"  # "cpu" (seconds of CPU) or "wall" (seconds the N calls took)
    requests: KeyPath | None = None  # where one driver's results hold the row's apiserver request count


@dataclass(frozen=True)
class RequestFloor:
    volumes: int
    namespaces: int


Floor = RssFloor | GrpcFloor | RequestFloor


@dataclass(frozen=True)
class Probes:
    """What the run's probes measured, per name a spread over its rounds; why a set is missing."""

    rss: dict[str, Spread]
    cpu: dict[str, Spread]
    rss_error: str | None = None
    cpu_error: str | None = None


NO_PROBES = Probes({}, {})


def _dig(doc: Any, path: KeyPath) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(str(key) if isinstance(key, int) else key)
    return doc


def value(
    floor: Floor, probes: Probes, ours_runs: Sequence[dict[str, Any]]
) -> tuple[str, str, float | None, str]:
    """(name, unit, floor value or None, why it is missing) of `floor`; `ours_runs`: our driver's results
    per run (request counts of GrpcFloor rows are the median over them)."""
    if isinstance(floor, RequestFloor):
        watches = f"{floor.namespaces} watch" + ("" if floor.namespaces == 1 else "es")
        name = f"{floor.volumes} SPCPS + {watches} (node-scoped)"
        return name, "requests", float(floor.volumes + floor.namespaces), ""
    if isinstance(floor, RssFloor):
        spread = probes.rss.get(floor.probe)
        return floor.probe, "MiB", None if spread is None else spread.median, probes.rss_error or ""
    base, calls = probes.cpu.get(f"{floor.mode}_{floor.measure}_s"), probes.cpu.get("calls")
    n = int(calls.median) if calls else "N"
    name = f"grpc.aio {n} calls" + (" + provider" if floor.mode == "server+client" else "")
    missing = probes.cpu_error or "floor not measured"
    if floor.measure == "wall":
        return name + " (wall)", "s", None if base is None else base.median, missing
    requests = stats.spread(_dig(r, floor.requests) for r in ours_runs) if floor.requests else None
    if requests is not None and requests.median > 0:
        name += f" + {requests.median:g} requests"
        per_request = probes.cpu.get(KUBE_REQUEST_MS)
        if base is None or per_request is None:
            return name, "s", None, missing
        return name, "s", base.median + requests.median * per_request.median / 1000, ""
    return name, "s", None if base is None else base.median, missing


def entry(
    floor: Floor,
    probes: Probes,
    ours_runs: Sequence[dict[str, Any]],
    ours: Spread | None,
    upstream: Spread | None,
) -> dict[str, Any]:
    """The row's `floor` in figures.<key>: its name and unit, and how far our median sits above it
    (stats.above_floor), or why it was not measured."""
    name, unit, floor_value, missing = value(floor, probes, ours_runs)
    out: dict[str, Any] = {"name": name, "unit": unit}
    if floor_value is None:
        out["error"] = missing or "floor not measured"
        return out
    return {**out, **stats.above_floor(ours, floor_value, upstream)}


def verdict_cell(verdict: str, floor: dict[str, Any] | None, fmt: Any = str) -> str:
    """The verdict column: a lost or noisy row with a measured floor says how far above it we are
    ("lost, at floor +23 MiB"; "lost, at floor" when on it)."""
    if not floor or "above" not in floor or verdict not in (stats.LOST, stats.NOISY):
        return verdict
    above = floor["above"]
    if abs(above) < 1e-9:
        return f"{verdict}, at floor"
    return f"{verdict}, at floor {'+' if above > 0 else '-'}{fmt(abs(above))} {floor['unit']}"
