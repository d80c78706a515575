"""bench.rounds: `--repeats` rounds with the drivers interleaved (ours, upstream, ours, upstream, ...),
each round under its own names and logs, floors at the start of each round, scenario 4 after all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import drivers, fixtures, rounds, run
from bench.settings import Settings, Shared


def shared(settings: Settings, tmp_path: Path, lines: list[str]) -> Shared:
    return Shared(
        api=None,  # type: ignore[arg-type]  # the phases are replaced below
        audit=None,  # type: ignore[arg-type]
        kubeconfig=tmp_path / "kubeconfig",
        run_id="abc123",
        workroot=tmp_path,
        logs_dir=tmp_path / "logs",
        settings=settings,
        progress=lines.append,
    )


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []

    async def phase(sh: Shared, spec: drivers.DriverSpec, name: str, settings: Settings) -> dict[str, Any]:
        calls.append(("phase", spec.name, name, sh.run_id, sh.logs_dir.name))
        return {"who": spec.name, "phase": name, "run_id": sh.run_id}

    async def floors() -> dict[str, Any]:
        calls.append(("floors",))
        return {"grpcio+protobuf": 30.0 + len(calls)}

    async def populate(sh: Shared, pods: int) -> dict[str, Any]:
        calls.append(("populate", str(pods)))
        return {"nodes": ["n"], "namespaces": ["ns"], "pods": pods, "seconds": 1.0}

    async def delete(*args: Any, **kwargs: Any) -> float:
        calls.append(("delete",))
        return 0.0

    monkeypatch.setattr(rounds, "run_phase", phase)

    async def cpu_floors(sh: Shared) -> dict[str, Any]:
        calls.append(("cpu_floors",))
        return {"calls": float(sh.settings.steady_pods), "server_cpu_s": 0.05}

    monkeypatch.setattr(rounds, "measure_floors", floors)
    monkeypatch.setattr(rounds, "measure_cpu_floors", cpu_floors)
    monkeypatch.setattr(rounds, "populate_elsewhere", populate)
    monkeypatch.setattr(fixtures, "delete_namespaces", delete)
    monkeypatch.setattr(fixtures, "delete_nodes", delete)
    return calls


SPECS = {
    "ours": drivers.DriverSpec("ours", Path("/x"), "a/", "1", takes_kubelet_root=True),
    "upstream": drivers.DriverSpec("upstream", Path("/y"), "b/", "1", takes_kubelet_root=False),
}


async def test_full_run_interleaves_drivers_round_by_round(
    recorded: list[tuple[str, ...]], tmp_path: Path
) -> None:
    lines: list[str] = []
    args = run.parse_args(["--repeats", "3"])
    out, elsewhere = await rounds.run_rounds(
        shared(Settings.full(), tmp_path, lines), SPECS, ["ours", "upstream"], args
    )
    phases = [(c[1], c[2]) for c in recorded if c[0] == "phase"]
    assert (
        phases
        == [("ours", "base"), ("upstream", "base")] * 3 + [("ours", "scale"), ("upstream", "scale")] * 3
    )
    kinds = [c[0] for c in recorded]
    assert kinds.index("populate") == 12  # 3 x (floors, cpu_floors, ours, upstream), then the cluster once
    assert kinds.count("floors") == kinds.count("cpu_floors") == 3 and kinds.count("populate") == 1
    # each round its own names and logs; base and scale of one round share them
    ids = [(c[3], c[4]) for c in recorded if c[0] == "phase"]
    assert ids[:2] == [("abc1231", "round1")] * 2 and ids[4] == ("abc1233", "round3")
    assert ids[6] == ("abc1231", "round1")
    assert [r["round"] for r in out] == [1, 2, 3]
    assert out[1]["drivers"]["upstream"] == {
        "base": {"who": "upstream", "phase": "base", "run_id": "abc1232"},
        "scale": {"who": "upstream", "phase": "scale", "run_id": "abc1232"},
    }
    assert all("grpcio+protobuf" in r["floors"] for r in out)
    assert all(r["cpu_floors"]["calls"] == 110 for r in out)
    assert elsewhere is not None and elsewhere["pods"] == 1100
    assert any(line.startswith("r2/3 ") for line in lines)


async def test_smoke_defaults_to_one_round_without_floors(
    recorded: list[tuple[str, ...]], tmp_path: Path
) -> None:
    args = run.parse_args(["--smoke"])
    assert args.repeats == 1 and args.floors is False
    out, elsewhere = await rounds.run_rounds(shared(Settings.smoke(), tmp_path, []), SPECS, ["ours"], args)
    assert [c[:3] for c in recorded] == [("phase", "ours", "base")]
    assert len(out) == 1 and out[0]["floors"] is None and out[0]["cpu_floors"] is None and elsewhere is None


def test_repeats_default_and_bounds() -> None:
    assert run.parse_args([]).repeats == 3 and run.parse_args([]).floors is True
    assert run.parse_args(["--smoke", "--repeats", "2"]).repeats == 2
    assert run.parse_args(["--no-floors"]).floors is False
    with pytest.raises(SystemExit):
        run.parse_args(["--repeats", "0"])


def test_floors_doc_reports_why_floors_are_missing() -> None:
    doc = rounds.floors_doc([{"floors": {"error": "floor not measured: boom"}}, {"floors": None}], True)
    assert doc["summary"] == {} and doc["error"] == "floor not measured: boom"
    assert doc["cpu"]["error"] == "floor not measured (--no-floors or --smoke)"
    doc = rounds.floors_doc(
        [
            {"floors": {"a": 1.0}, "cpu_floors": {"server_cpu_s": 0.1}},
            {"floors": {"a": 3.0}, "cpu_floors": None},
        ],
        True,
    )
    assert doc["summary"]["a"]["median"] == 2.0 and doc["error"] is None
    probes = rounds.probes(doc)
    assert probes.rss["a"].runs == (1.0, 3.0) and probes.cpu["server_cpu_s"].runs == (0.1,)
    assert probes.cpu_error is None
