"""Turn the runs' raw results into figures (median and spread per driver), verdicts, goals and the table.

Every figure is read from each run with a getter; `stats` turns the per-run values into a spread and a
verdict (won / lost / noisy / equal, see stats.py). Rows upstream may win name a floor (row_floors.py: RSS
of the interpreter with grpcio+protobuf, CPU and wall time of a bare grpc.aio server for the row's calls plus
its apiserver requests, the requests a node-scoped driver needs), measured in the same run, and show how far
above it we are. The PNG is drawn by chart.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import row_floors, stats
from .drivers import OURS, UPSTREAM
from .row_floors import NO_PROBES, Floor, GrpcFloor, Probes, RequestFloor, RssFloor
from .stats import Spread

Getter = Callable[[dict[str, Any]], Any]

# The floor an RSS row is compared with: a fresh interpreter importing grpcio and protobuf, which any
# Python CSI node plugin speaking gRPC pays before its own code. The other floors are listed under the table.
RSS_FLOOR = "grpcio+protobuf"


def dig(doc: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(doc, dict):
            doc = doc.get(str(key) if isinstance(key, int) else key)
        else:
            return None
        if doc is None:
            return None
    return doc


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    path: tuple[str | int, ...]
    higher_is_better: bool = False
    floor: Floor | None = None

    def get(self, results: dict[str, Any]) -> Any:
        return dig(results, *self.path)


def _rss(key: str, label: str, *path: str | int) -> Row:
    return Row(key, label, path, floor=RssFloor(RSS_FLOOR))


def figure_rows(sizes: tuple[int, ...], large: bool, scale: bool, namespaces: int = 10) -> list[Row]:
    """Every figure the table shows; paths are into one driver's results of one run (pods spread over
    `namespaces` namespaces)."""
    rows: list[Row] = []
    for n in sizes:
        rows += [
            Row(f"publish_{n}_p50_ms", f"publish N={n} p50 (ms)", ("base", "publish", n, "p50_ms")),
            Row(f"publish_{n}_p99_ms", f"publish N={n} p99 (ms)", ("base", "publish", n, "p99_ms")),
        ]
    top = max(sizes)
    pub: tuple[str | int, ...] = ("base", "publish", top)
    rows += [
        Row(f"publish_{top}_max_ms", f"publish N={top} max (ms)", (*pub, "max_ms")),
        Row(f"publish_{top}_pods_per_s", f"publish N={top} pods/s", (*pub, "pods_per_s"), True),
        Row(
            f"publish_{top}_cpu_s",
            f"publish N={top} driver CPU (s)",
            (*pub, "driver", "cpu_seconds"),
            floor=GrpcFloor("server+client", requests=(*pub, "apiserver", "requests")),
        ),
        Row(
            f"publish_{top}_requests",
            f"publish N={top} apiserver requests",
            (*pub, "apiserver", "requests"),
            floor=RequestFloor(top, min(top, namespaces)),
        ),
        Row(f"unpublish_{top}_p50_ms", f"unpublish N={top} p50 (ms)", ("base", "unpublish", "p50_ms")),
        Row(f"unpublish_{top}_max_ms", f"unpublish N={top} max (ms)", ("base", "unpublish", "max_ms")),
        _rss("rss_baseline_mib", "RSS fresh, 0 volumes (MiB)", "base", "baseline", "rss_mib"),
        _rss("rss_idle_mib", f"RSS idle, {top} volumes (MiB)", "base", "steady", "idle", "rss_mean_mib"),
        _rss(
            "rss_republish_peak_mib",
            "RSS peak during republish (MiB)",
            "base",
            "steady",
            "republish_peak_rss_mib",
        ),
        _rss("hwm_mib", "VmHWM after passes (MiB)", "base", "steady", "after_passes", "hwm_mib"),
        Row("cpu_idle_millicores", "CPU idle (millicores)", ("base", "steady", "idle", "cpu_millicores")),
        Row(
            "idle_requests", "apiserver requests while idle", ("base", "steady", "idle_apiserver", "requests")
        ),
    ]
    for kind in ("throttled", "unchanged", "changed"):
        rot: tuple[str | int, ...] = ("base", "rotation", kind)
        mode = "server" if kind == "throttled" else "server+client"  # a throttled pass asks no provider
        cpu_floor = GrpcFloor(mode, requests=(*rot, "apiserver", "requests"))
        rows += [
            Row(
                f"{kind}_pass_s",
                f"republish pass, {kind} (s)",
                (*rot, "duration_s"),
                floor=GrpcFloor(mode, "wall") if kind == "throttled" else None,
            ),
            Row(f"{kind}_pass_cpu_s", "  driver CPU (s)", (*rot, "driver", "cpu_seconds"), floor=cpu_floor),
            Row(f"{kind}_pass_requests", "  apiserver requests", (*rot, "apiserver", "requests")),
            Row(f"{kind}_pass_provider_calls", "  provider calls", (*rot, "provider_calls")),
        ]
    if large:
        big, many = ("base", "large", "secret_3mib"), ("base", "large", "files_100")
        rows += [
            Row("large_3mib_p50_ms", "3 MiB secret publish p50 (ms)", (*big, "p50_ms")),
            _rss("large_3mib_rss_mib", "  RSS after (MiB)", *big, "memory_after", "rss_mib"),
            Row("files_100_p50_ms", "100-file volume publish p50 (ms)", (*many, "p50_ms")),
            Row("files_100_cpu_s", "  driver CPU (s)", (*many, "driver", "cpu_seconds")),
            _rss("files_100_rss_mib", "  RSS after (MiB)", *many, "memory_after", "rss_mib"),
        ]
    if scale:
        x = "10x elsewhere:"
        rows += [
            Row("scale_publish_p50_ms", f"{x} publish N={top} p50 (ms)", ("scale", "publish", top, "p50_ms")),
            Row("scale_publish_p99_ms", f"{x} publish N={top} p99 (ms)", ("scale", "publish", top, "p99_ms")),
            _rss("scale_rss_baseline_mib", f"{x} RSS fresh (MiB)", "scale", "baseline", "rss_mib"),
            _rss(
                "scale_rss_idle_mib",
                f"{x} RSS idle, {top} vol (MiB)",
                "scale",
                "steady",
                "idle",
                "rss_mean_mib",
            ),
            Row(
                "scale_cpu_idle_millicores",
                f"{x} CPU idle (mCPU)",
                ("scale", "steady", "idle", "cpu_millicores"),
            ),
            Row(
                "scale_unchanged_requests",
                f"{x} unchanged pass requests",
                ("scale", "rotation", "unchanged", "apiserver", "requests"),
            ),
            Row(
                "scale_changed_pass_s",
                f"{x} changed pass (s)",
                ("scale", "rotation", "changed", "duration_s"),
            ),
            Row(
                "scale_changed_requests",
                f"{x} changed pass requests",
                ("scale", "rotation", "changed", "apiserver", "requests"),
            ),
        ]
    return rows


def driver_spread(runs: list[dict[str, Any]], driver: str, row: Row) -> Spread | None:
    """The row's values over the runs where `driver` ran."""
    return stats.spread(row.get(r[driver]) for r in runs if isinstance(r.get(driver), dict))


def floor_spreads(floor_runs: list[dict[str, Any]]) -> dict[str, Spread]:
    """Per probe name, its value over the runs that measured it."""
    names: dict[str, None] = {}
    for run in floor_runs:
        names.update(dict.fromkeys(k for k in run if k != "error"))
    out = {name: stats.spread(run.get(name) for run in floor_runs) for name in names}
    return {k: v for k, v in out.items() if v is not None}


def figures(
    runs: list[dict[str, Any]],
    rows: list[Row],
    probes: Probes = NO_PROBES,
) -> dict[str, dict[str, Any]]:
    """Per row: each driver's spread (median, min, max, every run), the ratio of medians, the verdict
    and, for rows naming a floor, how far our median is above it."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        a, b = driver_spread(runs, OURS, row), driver_spread(runs, UPSTREAM, row)
        entry: dict[str, Any] = {
            "label": row.label,
            "better": "higher" if row.higher_is_better else "lower",
            OURS: a.as_dict() if a else None,
            UPSTREAM: b.as_dict() if b else None,
            "ratio": stats.ratio(a.median if a else None, b.median if b else None),
            "verdict": stats.verdict(a, b, higher_is_better=row.higher_is_better),
        }
        if row.floor:
            ours_runs = [r[OURS] for r in runs if isinstance(r.get(OURS), dict)]
            entry["floor"] = row_floors.entry(row.floor, probes, ours_runs, a, b)
        out[row.key] = entry
    return out


def growth(results: dict[str, Any], driver: str, *path: str | int) -> float | None:
    d = results.get(driver) or {}
    return stats.ratio(dig(d, "scale", *path), dig(d, "base", *path))


def _judged(figs: dict[str, dict[str, Any]], key: str, a: Any, b: Any) -> tuple[bool | None, str]:
    """A comparative goal from its figure's verdict; with one run, from the two values (said so)."""
    v = dig(figs, key, "verdict")
    if v in (stats.WON, stats.EQUAL):
        return True, v
    if v == stats.LOST:
        return False, v
    if v == stats.SINGLE:
        x, y = stats.number(a), stats.number(b)
        return (None if x is None or y is None else x <= y), "1 run: not beyond noise"
    return None, "a side has no figure" if v in (None, stats.MISSING) else str(v)


def goals(
    results: dict[str, Any], top: int, scale: bool, figs: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The issue's goals, judged on the median of the runs (`results`: stats.median_view per driver)."""
    ours, up = results.get(OURS) or {}, results.get(UPSTREAM) or {}
    figs = figs or {}
    out: list[dict[str, Any]] = []

    def add(goal: str, ours_v: Any, up_v: Any, met: bool | None, note: str = "") -> None:
        out.append({"goal": goal, OURS: ours_v, UPSTREAM: up_v, "met": met, "note": note})

    for q in ("p50", "p99"):
        a, b = dig(ours, "base", "publish", top, f"{q}_ms"), dig(up, "base", "publish", top, f"{q}_ms")
        add(f"publish {q} (N={top}) <= upstream", a, b, *_judged(figs, f"publish_{top}_{q}_ms", a, b))
    a = dig(ours, "base", "steady", "idle", "rss_mean_mib")
    b = dig(up, "base", "steady", "idle", "rss_mean_mib")
    add(f"RSS at {top} volumes <= upstream", a, b, *_judged(figs, "rss_idle_mib", a, b))
    if figs:
        lost = [k for k, f in figs.items() if f["verdict"] == stats.LOST]
        bare = [k for k in lost if "above" not in (figs[k].get("floor") or {})]
        add(
            "every row at or below upstream beyond noise, or at a measured floor",
            {"lost": len(lost), "lost_without_floor": bare},
            None,
            not bare,
        )
    for kind, article in (("unchanged", "an"), ("throttled", "a")):
        a = dig(ours, "base", "rotation", kind, "apiserver", "requests")
        b = dig(up, "base", "rotation", kind, "apiserver", "requests")
        add(
            f"zero apiserver requests in {article} {kind} republish pass", a, b, None if a is None else a == 0
        )
    if scale:
        rss_g = growth(results, OURS, "steady", "idle", "rss_mean_mib")
        base_g = growth(results, OURS, "baseline", "rss_mib")
        req_a = dig(ours, "scale", "rotation", "unchanged", "apiserver", "requests")
        req_b = dig(ours, "base", "rotation", "unchanged", "apiserver", "requests")
        flat = (
            None if rss_g is None or base_g is None else rss_g <= 1.05 and base_g <= 1.05 and req_a == req_b
        )
        add(
            "cost flat with 10x SPCs/pods elsewhere (RSS within 5%, same requests)",
            {
                "rss_idle_growth": rss_g,
                "rss_fresh_growth": base_g,
                "publish_p50_growth": growth(results, OURS, "publish", top, "p50_ms"),
            },
            {
                "rss_idle_growth": growth(results, UPSTREAM, "steady", "idle", "rss_mean_mib"),
                "rss_fresh_growth": growth(results, UPSTREAM, "baseline", "rss_mib"),
                "publish_p50_growth": growth(results, UPSTREAM, "publish", top, "p50_ms"),
            },
            flat,
            "growth = median at 10x / median at 1x; latency growth is reported, not judged (noise)",
        )
    return out


def _fmt(x: Any) -> str:
    v = stats.number(x)
    if v is None:
        return "-" if x is None else str(x)
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def _cell(s: dict[str, Any] | None) -> str:
    """'median (min..max)', or the value alone for a single run."""
    if not s:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}..{_fmt(s['max'])})"


def _floor_cell(f: dict[str, Any] | None) -> str:
    if not f:
        return ""
    if "above" not in f:
        return f"{f['name']}: not measured"  # why: the floors lines under the table
    sign = "+" if f["above"] >= 0 else "-"
    text = f"{f['name']} {_fmt(f['value'])}: {sign}{_fmt(abs(f['above']))} {f['unit']}, {_fmt(f['times'])}x"
    return text + (" (floor >= upstream)" if f.get("floor_above_upstream") else "")


def _probe_lines(probes: Probes) -> list[str]:
    """What the floors were made of, under the table: every RSS probe, the gRPC and apiserver probes."""
    lines: list[str] = []
    if probes.rss:
        lines.append(
            "RSS floors (MiB, fresh interpreter importing the set; median (min..max)): "
            + ", ".join(f"{name} {_cell(s.as_dict())}" for name, s in probes.rss.items())
        )
    elif probes.rss_error:
        lines.append(f"RSS floors: {probes.rss_error}")
    if probes.cpu:
        lines.append(
            "CPU floors (fresh interpreter; median (min..max)): "
            + ", ".join(f"{name} {_cell(s.as_dict())}" for name, s in probes.cpu.items())
        )
    elif probes.cpu_error:
        lines.append(f"CPU floors: {probes.cpu_error}")
    return lines


def table(
    figs: dict[str, dict[str, Any]],
    goal_list: list[dict[str, Any]],
    repeats: int = 1,
    probes: Probes = NO_PROBES,
) -> str:
    width = max(len(f["label"]) for f in figs.values()) + 2
    cells = [(_cell(f[OURS]), _cell(f[UPSTREAM])) for f in figs.values()]
    verdicts = [row_floors.verdict_cell(f["verdict"], f.get("floor"), _fmt) for f in figs.values()]
    cw = max(12, *(len(c) + 2 for pair in cells for c in pair))
    vw = max(len(v) for v in [*verdicts, "verdict"]) + 2
    head = f"{'figure':<{width}}{'ours':>{cw}}{'upstream':>{cw}}{'ours/up':>9}  {'verdict':<{vw}}"
    head += "floor: ours above it"
    lines = [
        f"median (min..max) over {repeats} run(s) per driver, interleaved ours, upstream, ours, ...;",
        "won/lost only when the two ranges do not overlap, noisy when they do (tests/bench/README.md)",
        "",
        head,
        "-" * len(head),
    ]
    for f, (a, b), v in zip(figs.values(), cells, verdicts, strict=True):
        line = f"{f['label']:<{width}}{a:>{cw}}{b:>{cw}}{_fmt(f['ratio']):>9}  {v:<{vw}}"
        lines.append((line + _floor_cell(f.get("floor"))).rstrip())
    counts = stats.tally(f["verdict"] for f in figs.values())
    lines.append("")
    lines.append("rows: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    lost, unexplained, parent = [], [], ""
    for f in figs.values():
        label = f["label"]
        parent = parent if label.startswith(" ") else label  # sub-rows ("  driver CPU") name their parent
        name = f"{parent}: {label.strip()}" if label.startswith(" ") else label
        if f["verdict"] == stats.LOST:
            floor = f.get("floor") or {}
            lost.append(name + (" [floor named]" if "above" in floor else ""))
            if "above" not in floor:
                unexplained.append(name)
    if lost:
        lines.append("lost: " + "; ".join(lost))
        lines.append("lost without a measured floor: " + ("; ".join(unexplained) or "none"))
    lines += _probe_lines(probes)
    lines.append("")
    for g in goal_list:
        verdict = {True: "MET", False: "NOT MET", None: "n/a"}[g["met"]]
        note = f" [{g['note']}]" if g.get("note") and not g["note"].startswith("growth") else ""
        lines.append(f"goal: {g['goal']}: {verdict}{note}  (ours {g[OURS]}, upstream {g[UPSTREAM]})")
    return "\n".join(lines)
