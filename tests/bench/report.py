"""Turn the raw results into the comparison table, the goal verdicts and the PNG chart."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .drivers import OURS, UPSTREAM

Getter = Callable[[dict[str, Any]], float | None]


def dig(doc: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(doc, dict):
            doc = doc.get(str(key) if isinstance(key, int) else key)
        else:
            return None
        if doc is None:
            return None
    return doc


def _g(*path: str | int) -> Getter:
    return lambda d: dig(d, *path)


def figure_rows(sizes: tuple[int, ...], large: bool, scale: bool) -> list[tuple[str, str, Getter]]:
    """(key, label, getter on one driver's results) for every figure the table shows."""
    rows: list[tuple[str, str, Getter]] = []
    for n in sizes:
        rows += [
            (f"publish_{n}_p50_ms", f"publish N={n} p50 (ms)", _g("base", "publish", n, "p50_ms")),
            (f"publish_{n}_p99_ms", f"publish N={n} p99 (ms)", _g("base", "publish", n, "p99_ms")),
        ]
    top = max(sizes)
    rows += [
        (f"publish_{top}_max_ms", f"publish N={top} max (ms)", _g("base", "publish", top, "max_ms")),
        (f"publish_{top}_pods_per_s", f"publish N={top} pods/s", _g("base", "publish", top, "pods_per_s")),
        (
            f"publish_{top}_cpu_s",
            f"publish N={top} driver CPU (s)",
            _g("base", "publish", top, "driver", "cpu_seconds"),
        ),
        (
            f"publish_{top}_requests",
            f"publish N={top} apiserver requests",
            _g("base", "publish", top, "apiserver", "requests"),
        ),
        (f"unpublish_{top}_p50_ms", f"unpublish N={top} p50 (ms)", _g("base", "unpublish", "p50_ms")),
        (f"unpublish_{top}_max_ms", f"unpublish N={top} max (ms)", _g("base", "unpublish", "max_ms")),
        ("rss_baseline_mib", "RSS fresh, 0 volumes (MiB)", _g("base", "baseline", "rss_mib")),
        ("rss_idle_mib", f"RSS idle, {top} volumes (MiB)", _g("base", "steady", "idle", "rss_mean_mib")),
        (
            "rss_republish_peak_mib",
            "RSS peak during republish (MiB)",
            _g("base", "steady", "republish_peak_rss_mib"),
        ),
        ("hwm_mib", "VmHWM after passes (MiB)", _g("base", "steady", "after_passes", "hwm_mib")),
        ("cpu_idle_millicores", "CPU idle (millicores)", _g("base", "steady", "idle", "cpu_millicores")),
        (
            "idle_requests",
            "apiserver requests while idle",
            _g("base", "steady", "idle_apiserver", "requests"),
        ),
    ]
    for kind in ("throttled", "unchanged", "changed"):
        rows += [
            (f"{kind}_pass_s", f"republish pass, {kind} (s)", _g("base", "rotation", kind, "duration_s")),
            (
                f"{kind}_pass_cpu_s",
                "  driver CPU (s)",
                _g("base", "rotation", kind, "driver", "cpu_seconds"),
            ),
            (
                f"{kind}_pass_requests",
                "  apiserver requests",
                _g("base", "rotation", kind, "apiserver", "requests"),
            ),
            (
                f"{kind}_pass_provider_calls",
                "  provider calls",
                _g("base", "rotation", kind, "provider_calls"),
            ),
        ]
    if large:
        rows += [
            (
                "large_3mib_p50_ms",
                "3 MiB secret publish p50 (ms)",
                _g("base", "large", "secret_3mib", "p50_ms"),
            ),
            (
                "large_3mib_rss_mib",
                "  RSS after (MiB)",
                _g("base", "large", "secret_3mib", "memory_after", "rss_mib"),
            ),
            (
                "files_100_p50_ms",
                "100-file volume publish p50 (ms)",
                _g("base", "large", "files_100", "p50_ms"),
            ),
            (
                "files_100_rss_mib",
                "  RSS after (MiB)",
                _g("base", "large", "files_100", "memory_after", "rss_mib"),
            ),
        ]
    if scale:
        rows += [
            (
                "scale_publish_p50_ms",
                f"10x elsewhere: publish N={top} p50 (ms)",
                _g("scale", "publish", top, "p50_ms"),
            ),
            (
                "scale_publish_p99_ms",
                f"10x elsewhere: publish N={top} p99 (ms)",
                _g("scale", "publish", top, "p99_ms"),
            ),
            ("scale_rss_baseline_mib", "10x elsewhere: RSS fresh (MiB)", _g("scale", "baseline", "rss_mib")),
            (
                "scale_rss_idle_mib",
                f"10x elsewhere: RSS idle, {top} vol (MiB)",
                _g("scale", "steady", "idle", "rss_mean_mib"),
            ),
            (
                "scale_cpu_idle_millicores",
                "10x elsewhere: CPU idle (mCPU)",
                _g("scale", "steady", "idle", "cpu_millicores"),
            ),
            (
                "scale_unchanged_requests",
                "10x elsewhere: unchanged pass requests",
                _g("scale", "rotation", "unchanged", "apiserver", "requests"),
            ),
            (
                "scale_changed_pass_s",
                "10x elsewhere: changed pass (s)",
                _g("scale", "rotation", "changed", "duration_s"),
            ),
            (
                "scale_changed_requests",
                "10x elsewhere: changed pass requests",
                _g("scale", "rotation", "changed", "apiserver", "requests"),
            ),
        ]
    return rows


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def ratio(ours: Any, upstream: Any) -> float | None:
    a, b = _num(ours), _num(upstream)
    if a is None or b is None:
        return None
    if b == 0:
        return 1.0 if a == 0 else None
    return round(a / b, 3)


def figures(results: dict[str, Any], rows: list[tuple[str, str, Getter]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    ours = results.get(OURS) or {}
    upstream = results.get(UPSTREAM) or {}
    for key, label, get in rows:
        a, b = get(ours), get(upstream) if upstream else None
        out[key] = {"label": label, OURS: a, UPSTREAM: b, "ratio": ratio(a, b)}
    return out


def growth(results: dict[str, Any], driver: str, *path: str | int) -> float | None:
    d = results.get(driver) or {}
    return ratio(dig(d, "scale", *path), dig(d, "base", *path))


def goals(results: dict[str, Any], top: int, scale: bool) -> list[dict[str, Any]]:
    ours, up = results.get(OURS) or {}, results.get(UPSTREAM) or {}
    out: list[dict[str, Any]] = []

    def add(goal: str, ours_v: Any, up_v: Any, met: bool | None, note: str = "") -> None:
        out.append({"goal": goal, OURS: ours_v, UPSTREAM: up_v, "met": met, "note": note})

    def le(a: Any, b: Any) -> bool | None:
        x, y = _num(a), _num(b)
        return None if x is None or y is None else x <= y

    for q in ("p50", "p99"):
        a, b = dig(ours, "base", "publish", top, f"{q}_ms"), dig(up, "base", "publish", top, f"{q}_ms")
        add(f"publish {q} (N={top}) <= upstream", a, b, le(a, b))
    a, b = (
        dig(ours, "base", "steady", "idle", "rss_mean_mib"),
        dig(up, "base", "steady", "idle", "rss_mean_mib"),
    )
    add(f"RSS at {top} volumes <= upstream", a, b, le(a, b))
    a = dig(ours, "base", "rotation", "unchanged", "apiserver", "requests")
    b = dig(up, "base", "rotation", "unchanged", "apiserver", "requests")
    add("zero apiserver requests in an unchanged republish pass", a, b, None if a is None else a == 0)
    a = dig(ours, "base", "rotation", "throttled", "apiserver", "requests")
    b = dig(up, "base", "rotation", "throttled", "apiserver", "requests")
    add("zero apiserver requests in a throttled republish pass", a, b, None if a is None else a == 0)
    if scale:
        rss_g = growth(results, OURS, "steady", "idle", "rss_mean_mib")
        base_g = growth(results, OURS, "baseline", "rss_mib")
        req_a = dig(ours, "scale", "rotation", "unchanged", "apiserver", "requests")
        req_b = dig(ours, "base", "rotation", "unchanged", "apiserver", "requests")
        p50_g = growth(results, OURS, "publish", top, "p50_ms")
        flat = (
            None if rss_g is None or base_g is None else rss_g <= 1.05 and base_g <= 1.05 and req_a == req_b
        )
        add(
            "cost flat with 10x SPCs/pods elsewhere (RSS within 5%, same requests)",
            {"rss_idle_growth": rss_g, "rss_fresh_growth": base_g, "publish_p50_growth": p50_g},
            {
                "rss_idle_growth": growth(results, UPSTREAM, "steady", "idle", "rss_mean_mib"),
                "rss_fresh_growth": growth(results, UPSTREAM, "baseline", "rss_mib"),
                "publish_p50_growth": growth(results, UPSTREAM, "publish", top, "p50_ms"),
            },
            flat,
            "growth = value at 10x / value at 1x; latency growth is reported, not judged (noise)",
        )
    return out


def _fmt(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "-" if x is None else str(x)
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def table(figs: dict[str, dict[str, Any]], goal_list: list[dict[str, Any]]) -> str:
    width = max(len(f["label"]) for f in figs.values()) + 2
    lines = [f"{'figure':<{width}}{'ours':>10}{'upstream':>10}{'ours/up':>9}", "-" * (width + 29)]
    for f in figs.values():
        lines.append(f"{f['label']:<{width}}{_fmt(f[OURS]):>10}{_fmt(f[UPSTREAM]):>10}{_fmt(f['ratio']):>9}")
    lines.append("")
    for g in goal_list:
        verdict = {True: "MET", False: "NOT MET", None: "n/a"}[g["met"]]
        lines.append(f"goal: {g['goal']}: {verdict}  (ours {g[OURS]}, upstream {g[UPSTREAM]})")
    return "\n".join(lines)


def chart(doc: dict[str, Any], path: Path) -> str | None:
    """Latency distributions, RSS per scenario and republish passes; None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    results = doc["drivers"]
    names = [d for d in (OURS, UPSTREAM) if results.get(d, {}).get("base")]
    colors = {OURS: "#3572A5", UPSTREAM: "#00ADD8"}
    sizes = doc["config"]["publish_sizes"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))

    # 1. publish latency distributions
    ax = axes[0]
    groups: list[tuple[str, str]] = [(f"N={n}", f"base.{n}") for n in sizes]
    if any(dig(results, d, "scale", "publish") for d in names):
        groups.append((f"N={max(sizes)}\n10x elsewhere", f"scale.{max(sizes)}"))
    if any(dig(results, d, "base", "large") for d in names):
        groups += [("3 MiB", "large.secret_3mib"), ("100 files", "large.files_100")]
    data, pos, cols = [], [], []
    for i, (_, key) in enumerate(groups):
        for j, d in enumerate(names):
            part, sub = key.split(".", 1)
            if part == "large":
                lat = dig(results, d, "base", "large", sub, "latencies_ms")
            else:
                lat = dig(results, d, part, "publish", sub, "latencies_ms")
            if lat:
                data.append(lat)
                pos.append(i * 3 + j)
                cols.append(colors[d])
    if data:
        parts = ax.boxplot(data, positions=pos, widths=0.8, patch_artist=True, showfliers=True)
        for patch, c in zip(parts["boxes"], cols, strict=True):
            patch.set_facecolor(c)
    ax.set_xticks([i * 3 + 0.5 for i in range(len(groups))], [g[0] for g in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("NodePublishVolume latency (ms, log)")
    ax.set_title("Publish latency distribution (concurrent burst per N)")
    for d in names:
        ax.plot([], [], color=colors[d], linewidth=8, label=d)
    ax.legend()

    # 2. RSS per scenario
    ax = axes[1]
    top = max(sizes)
    labels_paths: list[tuple[str, tuple[Any, ...]]] = [
        ("fresh", ("base", "baseline", "rss_mib")),
        (f"idle\n{top} vol", ("base", "steady", "idle", "rss_mean_mib")),
        ("republish\npeak", ("base", "steady", "republish_peak_rss_mib")),
        ("after\n3 MiB", ("base", "large", "secret_3mib", "memory_after", "rss_mib")),
        ("after\n100 files", ("base", "large", "files_100", "memory_after", "rss_mib")),
        ("10x: fresh", ("scale", "baseline", "rss_mib")),
        (f"10x: idle\n{top} vol", ("scale", "steady", "idle", "rss_mean_mib")),
    ]
    labels_paths = [lp for lp in labels_paths if any(dig(results, d, *lp[1]) for d in names)]
    width = 0.8 / max(1, len(names))
    for j, d in enumerate(names):
        vals = [_num(dig(results, d, *p)) or 0.0 for _, p in labels_paths]
        xs = [i + j * width for i in range(len(labels_paths))]
        bars = ax.bar(xs, vals, width, label=d, color=colors[d])
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(
        [i + width * (len(names) - 1) / 2 for i in range(len(labels_paths))],
        [lp[0] for lp in labels_paths],
        fontsize=8,
    )
    ax.set_ylabel("driver RSS (MiB)")
    ax.set_title("Driver memory per scenario")
    ax.legend()

    # 3. republish passes
    ax = axes[2]
    kinds = ["throttled", "unchanged", "changed"]
    for j, d in enumerate(names):
        vals = [_num(dig(results, d, "base", "rotation", k, "duration_s")) or 0.0 for k in kinds]
        reqs = [dig(results, d, "base", "rotation", k, "apiserver", "requests") for k in kinds]
        xs = [i + j * width for i in range(len(kinds))]
        bars = ax.bar(xs, vals, width, label=d, color=colors[d])
        ax.bar_label(bars, labels=[f"{r} req" if r is not None else "" for r in reqs], fontsize=7)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(kinds))], kinds)
    ax.set_ylabel(f"pass over {top} volumes (s)")
    ax.set_title("Republish passes (labels: driver's apiserver requests)")
    ax.legend()

    env = doc.get("environment", {})
    fig.suptitle(
        f"secrets-store CSI: ours {env.get('ours_version')} vs upstream {env.get('upstream_version')} "
        f"({env.get('cpus')} cores, {doc.get('mode')} run)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
