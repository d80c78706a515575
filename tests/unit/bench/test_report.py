"""bench.report: figures over repeated runs (every run kept, median and range per driver), verdicts,
floors beside the rows upstream may win (RSS, CPU, requests), goals from the verdicts, and the table."""

from __future__ import annotations

from typing import Any

from bench import report, stats
from bench.report import Row
from bench.row_floors import GrpcFloor, Probes, RequestFloor, RssFloor


def driver_run(
    p50: float, rss: float, pods_per_s: float, requests: int, cpu: float = 1.0, burst: int = 120
) -> dict[str, Any]:
    return {
        "base": {
            "publish": {
                "110": {
                    "p50_ms": p50,
                    "p99_ms": p50 * 3,
                    "pods_per_s": pods_per_s,
                    "apiserver": {"requests": burst},
                }
            },
            "steady": {"idle": {"rss_mean_mib": rss}},
            "rotation": {
                "unchanged": {"apiserver": {"requests": requests}},
                "changed": {"driver": {"cpu_seconds": cpu}, "apiserver": {"requests": 220}},
            },
        }
    }


ROWS = [
    Row("publish_110_p50_ms", "publish N=110 p50 (ms)", ("base", "publish", 110, "p50_ms")),
    Row("pods_per_s", "pods/s", ("base", "publish", 110, "pods_per_s"), higher_is_better=True),
    Row(
        "rss_idle_mib",
        "RSS idle (MiB)",
        ("base", "steady", "idle", "rss_mean_mib"),
        floor=RssFloor(report.RSS_FLOOR),
    ),
    Row("unchanged", "unchanged requests", ("base", "rotation", "unchanged", "apiserver", "requests")),
]

# three rounds, ours and upstream each round; ours faster beyond noise, heavier beyond noise,
# same request count
RUNS = [
    {"ours": driver_run(10, 55, 90, 0), "upstream": driver_run(30, 38, 40, 0)},
    {"ours": driver_run(12, 56, 95, 0), "upstream": driver_run(25, 37, 45, 0)},
    {"ours": driver_run(11, 57, 99, 0), "upstream": driver_run(40, 39, 50, 0)},
]
FLOORS = Probes(
    report.floor_spreads([{"grpcio+protobuf": 32.0}, {"grpcio+protobuf": 33.0}, {"grpcio+protobuf": 34.0}]),
    {},
)


def test_figures_keep_every_run_and_judge_by_the_rule() -> None:
    figs = report.figures(RUNS, ROWS, FLOORS)
    p50 = figs["publish_110_p50_ms"]
    assert p50["ours"] == {"median": 11.0, "min": 10.0, "max": 12.0, "n": 3, "runs": [10.0, 12.0, 11.0]}
    assert p50["upstream"]["runs"] == [30.0, 25.0, 40.0]
    assert p50["ratio"] == round(11 / 30, 3)
    assert p50["verdict"] == stats.WON
    assert figs["pods_per_s"]["verdict"] == stats.WON  # higher is better there
    assert figs["rss_idle_mib"]["verdict"] == stats.LOST
    assert figs["unchanged"]["verdict"] == stats.EQUAL
    floor = figs["rss_idle_mib"]["floor"]
    assert floor["name"] == "grpcio+protobuf"
    assert floor["value"] == 33.0 and floor["above"] == 23.0 and floor["floor_above_upstream"] is False
    assert floor["unit"] == "MiB"
    assert "floor" not in p50


def test_one_noisy_round_makes_the_row_noisy() -> None:
    runs = [*RUNS, {"ours": driver_run(26, 56, 90, 0), "upstream": driver_run(30, 38, 40, 0)}]
    assert report.figures(runs, ROWS)["publish_110_p50_ms"]["verdict"] == stats.NOISY


def test_a_failed_phase_is_a_run_without_the_figure() -> None:
    runs = [RUNS[0], {"ours": {"base": {"error": "boom"}}, "upstream": RUNS[1]["upstream"]}, RUNS[2]]
    p50 = report.figures(runs, ROWS)["publish_110_p50_ms"]
    assert p50["ours"]["n"] == 2 and p50["upstream"]["n"] == 3
    only_ours = report.figures([{"ours": r["ours"]} for r in RUNS], ROWS)["publish_110_p50_ms"]
    assert only_ours["upstream"] is None and only_ours["verdict"] == stats.MISSING


def test_rss_rows_say_when_the_floor_was_not_measured() -> None:
    probes = Probes({}, {}, rss_error="floor not measured: tests/bench/floors.py not importable")
    figs = report.figures(RUNS, ROWS, probes)
    assert figs["rss_idle_mib"]["floor"] == {
        "name": "grpcio+protobuf",
        "unit": "MiB",
        "error": "floor not measured: tests/bench/floors.py not importable",
    }
    text = report.table(figs, [], 3, probes)
    assert "grpcio+protobuf: not measured" in text
    assert "lost without a measured floor: RSS idle (MiB)" in text
    assert "RSS floors: floor not measured: tests/bench/floors.py not importable" in text


def test_floor_spreads_skip_rounds_whose_probe_failed() -> None:
    spreads = report.floor_spreads([{"a": 1.0, "b": 2.0}, {"error": "timeout"}, {"a": 3.0}])
    assert spreads["a"].runs == (1.0, 3.0) and spreads["b"].runs == (2.0,)
    assert "error" not in spreads


def test_goals_follow_the_verdicts() -> None:
    figs = report.figures(RUNS, ROWS)
    view = {name: stats.median_view([r[name] for r in RUNS]) for name in ("ours", "upstream")}
    goals = {g["goal"]: g for g in report.goals(view, 110, False, figs)}
    assert goals["publish p50 (N=110) <= upstream"]["met"] is True
    assert goals["publish p50 (N=110) <= upstream"]["ours"] == 11
    assert goals["RSS at 110 volumes <= upstream"]["met"] is False
    assert goals["zero apiserver requests in an unchanged republish pass"]["met"] is True
    acceptance = goals["every row at or below upstream beyond noise, or at a measured floor"]
    assert acceptance["met"] is False and acceptance["ours"]["lost_without_floor"] == ["rss_idle_mib"]
    floored = report.figures(RUNS, ROWS, FLOORS)
    met = {g["goal"]: g["met"] for g in report.goals(view, 110, False, floored)}
    assert met["every row at or below upstream beyond noise, or at a measured floor"] is True
    noisy = report.figures(
        [*RUNS, {"ours": driver_run(26, 56, 90, 0), "upstream": driver_run(30, 38, 40, 0)}], ROWS
    )
    goals = {g["goal"]: g for g in report.goals(view, 110, False, noisy)}
    assert goals["publish p50 (N=110) <= upstream"]["met"] is None
    assert goals["publish p50 (N=110) <= upstream"]["note"] == stats.NOISY


def test_table_shows_median_range_verdict_and_floor() -> None:
    figs = report.figures(RUNS, ROWS, FLOORS)
    text = report.table(figs, [], 3, FLOORS)
    line = next(x for x in text.splitlines() if x.startswith("publish N=110 p50"))
    assert "11 (10..12)" in line and "30 (25..40)" in line and "won" in line and "floor" not in line
    rss = next(x for x in text.splitlines() if x.startswith("RSS idle"))
    assert "lost, at floor +23 MiB" in rss and "grpcio+protobuf 33: +23 MiB, 1.7x" in rss
    assert "over 3 run(s)" in text
    assert "rows: won 2, lost 1, equal 1" in text
    assert "lost: RSS idle (MiB) [floor named]" in text
    assert "lost without a measured floor: none" in text
    assert "RSS floors (MiB" in text and "grpcio+protobuf 33 (32..34)" in text


CPU_PROBES = {
    "calls": [110.0, 110.0, 110.0],
    "server_cpu_s": [0.05, 0.05, 0.06],
    "server+client_cpu_s": [0.1, 0.11, 0.12],
    "server_wall_s": [0.09, 0.1, 0.08],
    "kube_request_cpu_ms": [1.5, 2.0, 2.5],
}
PROBES = Probes(
    {},
    report.floor_spreads([{k: v[i] for k, v in CPU_PROBES.items()} for i in range(3)]),
)


def test_a_cpu_row_adds_its_apiserver_requests_to_the_grpc_floor() -> None:
    row = Row(
        "changed_cpu",
        "changed pass CPU (s)",
        ("base", "rotation", "changed", "driver", "cpu_seconds"),
        floor=GrpcFloor("server+client", requests=("base", "rotation", "changed", "apiserver", "requests")),
    )
    runs = [
        {"ours": driver_run(10, 55, 90, 0, cpu=c), "upstream": driver_run(30, 38, 40, 0, cpu=0.6 + i / 100)}
        for i, c in enumerate((1.0, 1.1, 0.9))
    ]
    fig = report.figures(runs, [row], PROBES)["changed_cpu"]
    assert fig["verdict"] == stats.LOST
    floor = fig["floor"]
    # gRPC floor for 110 calls with a provider call each (median 0.11 s) + 220 requests x 2 ms
    assert floor["name"] == "grpc.aio 110 calls + provider + 220 requests"
    assert floor["unit"] == "s" and floor["value"] == 0.55 and floor["above"] == 0.45
    assert floor["floor_above_upstream"] is False
    text = report.table({"changed_cpu": fig}, [], 3, PROBES)
    assert "lost, at floor +0.45 s" in text
    assert "CPU floors (fresh interpreter" in text and "kube_request_cpu_ms 2 (1.5..2.5)" in text


def test_a_wall_row_and_a_row_without_requests_take_the_bare_grpc_floor() -> None:
    runs = [{"ours": driver_run(10, 55, 90, 0), "upstream": driver_run(30, 38, 40, 0)}]
    wall = report.figures(runs, [Row("p", "pass (s)", ("x",), floor=GrpcFloor("server", "wall"))], PROBES)
    assert wall["p"]["floor"]["name"] == "grpc.aio 110 calls (wall)" and wall["p"]["floor"]["value"] == 0.09
    cpu = report.figures(runs, [Row("c", "cpu", ("x",), floor=GrpcFloor("server", requests=("y",)))], PROBES)
    assert cpu["c"]["floor"]["name"] == "grpc.aio 110 calls" and cpu["c"]["floor"]["value"] == 0.05
    missing = report.figures(runs, [Row("c", "cpu", ("x",), floor=GrpcFloor("server"))], Probes({}, {}))
    assert missing["c"]["floor"]["error"] == "floor not measured"


def test_the_burst_requests_floor_comes_from_the_scenario() -> None:
    rows = report.figure_rows((1, 10, 110), large=False, scale=False, namespaces=10)
    row = next(r for r in rows if r.key == "publish_110_requests")
    assert row.floor == RequestFloor(110, 10)
    runs = [{"ours": driver_run(10, 55, 90, 0), "upstream": driver_run(30, 38, 40, 0, burst=110)}] * 3
    fig = report.figures(runs, [row])["publish_110_requests"]
    assert fig["verdict"] == stats.LOST
    assert fig["floor"] == {
        "name": "110 SPCPS + 10 watches (node-scoped)",
        "unit": "requests",
        "value": 120.0,
        "above": 0.0,
        "times": 1.0,
        "floor_above_upstream": True,
    }
    text = report.table({"publish_110_requests": fig}, [], 3)
    assert "lost, at floor " in text and "(floor >= upstream)" in text
    assert "lost without a measured floor: none" in text
    keyed = {r.key: r.floor for r in rows}
    assert keyed["throttled_pass_cpu_s"] == GrpcFloor(
        "server", requests=("base", "rotation", "throttled", "apiserver", "requests")
    )
    assert keyed["changed_pass_cpu_s"] == GrpcFloor(
        "server+client", requests=("base", "rotation", "changed", "apiserver", "requests")
    )
    assert keyed["throttled_pass_s"] == GrpcFloor("server", "wall")
    assert keyed["publish_110_cpu_s"] == GrpcFloor(
        "server+client", requests=("base", "publish", 110, "apiserver", "requests")
    )


def test_lost_list_names_a_sub_row_with_its_parent() -> None:
    rows = [
        Row("pass_s", "republish pass (s)", ("base", "publish", 110, "p50_ms")),
        Row("pass_cpu", "  driver CPU (s)", ("base", "steady", "idle", "rss_mean_mib")),
    ]
    text = report.table(report.figures(RUNS, rows), [], 3)
    assert "lost: republish pass (s): driver CPU (s)" in text
