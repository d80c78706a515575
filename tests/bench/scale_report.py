"""The scale benchmark's table, verdicts and PNG: the 500-volume node, the M-node cluster, the soak."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .drivers import OURS, UPSTREAM

DRIVERS = (OURS, UPSTREAM)
COLORS = {OURS: "#3572A5", UPSTREAM: "#00ADD8"}
FLAT_FACTOR = 1.1

NODE_ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("publish p50 (ms)", ("publish", "p50_ms")),
    ("publish p99 (ms)", ("publish", "p99_ms")),
    ("publish max (ms)", ("publish", "max_ms")),
    ("publish driver CPU (s)", ("publish", "driver", "cpu_seconds")),
    ("publish apiserver requests", ("publish", "apiserver", "requests")),
    ("RSS fresh (MiB)", ("baseline", "rss_mib")),
    ("RSS idle, all volumes (MiB)", ("steady", "idle", "rss_mean_mib")),
    ("RSS peak in republish (MiB)", ("steady", "republish_peak_rss_mib")),
    ("CPU idle (millicores)", ("steady", "idle", "cpu_millicores")),
    ("apiserver requests while idle", ("steady", "idle_apiserver", "requests")),
]
for _kind in ("throttled", "unchanged", "changed"):
    NODE_ROWS += [
        (f"republish pass, {_kind} (s)", ("rotation", _kind, "duration_s")),
        ("  driver CPU (s)", ("rotation", _kind, "driver", "cpu_seconds")),
        ("  apiserver requests", ("rotation", _kind, "apiserver", "requests")),
    ]

CLUSTER_ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("idle apiserver req/min per node", ("idle", "requests_per_min_per_node")),
    ("rotation wave requests per node", ("wave", "requests_per_node")),
    ("rotation wave req/min per node", ("wave", "requests_per_min_per_node")),
    ("watches open per node (audit)", ("idle", "watches_per_node")),
    ("apiserver CPU idle (mCPU)", ("idle", "apiserver_cpu", "cpu_millicores")),
    ("apiserver CPU in wave (mCPU)", ("wave", "apiserver_cpu", "cpu_millicores")),
    ("apiserver RSS after idle (MiB)", ("idle", "apiserver_rss_mib")),
    ("publish p99 (ms)", ("publish", "p99_ms")),
    ("publish apiserver requests", ("publish", "apiserver", "requests")),
    ("driver RSS mean (MiB)", ("idle", "driver_rss_mean_mib")),
    ("driver CPU idle per node (mCPU)", ("idle", "drivers_cpu_millicores_per_node")),
]


def dig(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def ratio(a: Any, b: Any) -> float | None:
    x, y = num(a), num(b)
    if x is None or y is None:
        return None
    if y == 0:
        return 1.0 if x == 0 else None
    return round(x / y, 3)


def fmt(x: Any) -> str:
    v = num(x)
    if v is None:
        return "-" if x is None else str(x)
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def cluster_sizes(doc: dict[str, Any]) -> list[int]:
    sizes = {int(m) for d in DRIVERS for m in (dig(doc, "cluster", d) or {})}
    return sorted(sizes)


def flat_verdicts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Idle apiserver requests per minute per node at the largest M within 1.1x of the smallest M."""
    sizes = cluster_sizes(doc)
    out: dict[str, dict[str, Any]] = {}
    if len(sizes) < 2:
        return out
    lo, hi = str(sizes[0]), str(sizes[-1])
    for d in DRIVERS:
        runs = dig(doc, "cluster", d) or {}
        a = dig(runs, lo, "idle", "requests_per_min_per_node")
        b = dig(runs, hi, "idle", "requests_per_min_per_node")
        if a is None and b is None:
            continue
        growth = ratio(b, a)
        out[d] = {
            "from_m": sizes[0],
            "to_m": sizes[-1],
            "value_from": a,
            "value_to": b,
            "growth": growth,
            "flat": None
            if growth is None and num(a) is None
            else (growth is not None and growth <= FLAT_FACTOR),
        }
    return out


def table(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    node = doc.get("node") or {}
    if node:
        pods = next((dig(node, d, "pods") for d in DRIVERS if dig(node, d, "pods")), "?")
        vols = next((dig(node, d, "publish", "volumes") for d in DRIVERS if dig(node, d, "publish")), "?")
        lines += [f"== node at its limits: {pods} pods, {vols} volumes", ""]
        lines.append(f"{'figure':<34}{'ours':>10}{'upstream':>10}{'ours/up':>9}")
        for label, path in NODE_ROWS:
            a, b = dig(node, OURS, *path), dig(node, UPSTREAM, *path)
            lines.append(f"{label:<34}{fmt(a):>10}{fmt(b):>10}{fmt(ratio(a, b)):>9}")
        for d in DRIVERS:
            if dig(node, d, "error"):
                lines.append(f"  {d} FAILED: {node[d]['error']}")
        lines.append("")
    sizes = cluster_sizes(doc)
    if sizes:
        head = "".join(f"{'M=' + str(m):>9}" for m in sizes)
        lines += [
            f"== cluster: M simulated nodes on one apiserver (growth = M={sizes[-1]} / M={sizes[0]})",
            "",
        ]
        lines.append(f"{'figure':<34}{'driver':<10}{head}{'growth':>9}")
        for label, path in CLUSTER_ROWS:
            for i, d in enumerate(DRIVERS):
                runs = dig(doc, "cluster", d) or {}
                if not runs:
                    continue
                vals = [dig(runs, str(m), *path) for m in sizes]
                cells = "".join(f"{fmt(v):>9}" for v in vals)
                grow = ratio(vals[-1], vals[0]) if len(vals) > 1 else None
                lines.append(f"{label if i == 0 else '':<34}{d:<10}{cells}{fmt(grow):>9}")
        for d in DRIVERS:
            for m, r in (dig(doc, "cluster", d) or {}).items():
                if r.get("error"):
                    lines.append(f"  {d} M={m} FAILED: {r['error']}")
        lines.append("")
        for d, v in flat_verdicts(doc).items():
            verdict = {True: "FLAT", False: "NOT FLAT", None: "n/a"}[v["flat"]]
            lines.append(
                f"flat at cluster scale ({d}): idle req/min/node M={v['to_m']} {fmt(v['value_to'])} "
                f"vs M={v['from_m']} {fmt(v['value_from'])} (x{fmt(v['growth'])}, limit {FLAT_FACTOR}): "
                f"{verdict}"
            )
        lines.append("")
    soak = doc.get("soak") or {}
    if soak:
        lines += ["== soak: pod churn with rotation every tick", ""]
        for d in DRIVERS:
            r = soak.get(d)
            if not r:
                continue
            if r.get("error"):
                lines.append(f"{d}: FAILED: {r['error']}")
                continue
            a, c = r["analysis"], r["counts"]

            def span(key: str, a: dict[str, Any] = a) -> str:
                v = a.get(key)
                return "not observable" if v is None else f"{v['baseline']} -> {v['end']} ({v['delta']:+d})"

            verdict = "FLAT" if a["flat"] else "NOT FLAT"
            lines.append(
                f"{d}: {r['seconds']:g}s, {c.get('created', 0)} pods churned, "
                f"{c.get('republished', 0)} republishes; "
                f"RSS {a['rss_baseline_mib']} -> {a['rss_end_mib']} MiB, slope "
                f"{a['rss_slope_mib_per_10min']} MiB/10 min (last half "
                f"{a.get('rss_slope_last_half_mib_per_10min')}); fds {span('fds')}; "
                f"threads {span('threads')}; tasks {span('tasks')}: {verdict}"
            )
    return "\n".join(lines).rstrip() + "\n"


def chart(doc: dict[str, Any], path: Path) -> str | None:
    """Cluster figures against M (a line per driver), the 500-volume node, the soak over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    fig, axes = plt.subplots(3, 3, figsize=(18, 14))
    sizes = cluster_sizes(doc)
    panels = [
        ("idle apiserver req/min per node", ("idle", "requests_per_min_per_node")),
        ("rotation wave: requests per node", ("wave", "requests_per_node")),
        ("watches open per node", ("idle", "watches_per_node")),
        ("apiserver CPU idle (millicores)", ("idle", "apiserver_cpu", "cpu_millicores")),
        ("apiserver RSS after idle (MiB)", ("idle", "apiserver_rss_mib")),
        ("publish p99 (ms)", ("publish", "p99_ms")),
    ]
    for ax, (title, p) in zip(axes.flat[:6], panels, strict=True):
        for d in DRIVERS:
            runs = dig(doc, "cluster", d) or {}
            pts = [(m, num(dig(runs, str(m), *p))) for m in sizes]
            xs = [m for m, v in pts if v is not None]
            if xs:
                ax.plot(xs, [v for _, v in pts if v is not None], marker="o", color=COLORS[d], label=d)
        ax.set_xlabel("simulated nodes (M)")
        ax.set_title(title)
        ax.set_xticks(sizes or [0])
        ax.set_ylim(bottom=0)
        _legend(ax)
    ax = axes[2][0]
    node = doc.get("node") or {}
    labels = ["p50", "p99", "max"]
    for j, d in enumerate(DRIVERS):
        vals = [num(dig(node, d, "publish", f"{q}_ms")) or 0.0 for q in labels]
        bars = ax.bar([i + j * 0.4 for i in range(3)], vals, 0.4, color=COLORS[d], label=d)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([i + 0.2 for i in range(3)], labels)
    ax.set_ylabel("ms")
    vols = next((dig(node, d, "publish", "volumes") for d in DRIVERS if dig(node, d, "publish")), "?")
    ax.set_title(f"node with {vols} volumes: publish burst latency")
    _legend(ax)
    soak = doc.get("soak") or {}
    ax_rss, ax_cnt = axes[2][1], axes[2][2]
    for d in DRIVERS:
        samples = dig(soak, d, "samples") or []
        if not samples:
            continue
        ts = [s["t"] / 60 for s in samples]
        ax_rss.plot(ts, [s["rss_mib"] for s in samples], color=COLORS[d], label=d)
        for key, style in (("fds", "-"), ("threads", "--"), ("tasks", ":")):
            ys = [s.get(key) for s in samples]
            if any(y is not None for y in ys):
                ax_cnt.plot(
                    ts,
                    [y if y is not None else math.nan for y in ys],
                    style,
                    color=COLORS[d],
                    label=f"{d} {'goroutines' if key == 'tasks' and d == UPSTREAM else key}",
                )
    ax_rss.set_title("soak: driver RSS (MiB)")
    ax_rss.set_xlabel("minutes")
    _legend(ax_rss)
    ax_cnt.set_title("soak: open fds, threads, tasks (upstream: goroutines)")
    ax_cnt.set_xlabel("minutes")
    _legend(ax_cnt, fontsize=7)
    env = doc.get("environment", {})
    fig.suptitle(
        f"secrets-store CSI at scale: ours {env.get('ours_version')} "
        f"vs upstream {env.get('upstream_version')} "
        f"({env.get('cpus')} cores, {doc.get('mode')} run)",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
