"""The bench's PNG: latency distributions (every run pooled), RSS and republish passes as the median
with a bar from the fastest to the slowest run, the RSS floors as dashed lines, and the driver CPU of the
burst and of each pass with its floor (row_floors.py) as a black tick over the group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .drivers import OURS, UPSTREAM
from .report import RSS_FLOOR, dig

COLORS = {OURS: "#3572A5", UPSTREAM: "#00ADD8"}
FLOOR_LINES = (RSS_FLOOR, "driver-imports")


def pooled_latencies(runs: list[dict[str, Any]], driver: str, *path: str) -> list[float]:
    """The latency samples at `path` of every run of `driver`, in one list."""
    out: list[float] = []
    for run in runs:
        out += dig(run, driver, *path) or []
    return out


def _median_and_error(fig: dict[str, Any] | None) -> tuple[float, float, float]:
    """(median, median - min, max - median) of one driver's spread; zeros when absent."""
    if not fig:
        return 0.0, 0.0, 0.0
    return fig["median"], fig["median"] - fig["min"], fig["max"] - fig["median"]


def chart(doc: dict[str, Any], path: Path) -> str | None:
    """Writes the PNG; returns why not (matplotlib absent) or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    runs = [r["drivers"] for r in doc["runs"]]
    figs = doc["figures"]
    names = [d for d in (OURS, UPSTREAM) if any(dig(r, d, "base") for r in runs)]
    sizes = doc["config"]["publish_sizes"]
    top = max(sizes)
    fig, axes = plt.subplots(1, 4, figsize=(23, 5.5))

    # 1. publish latency distributions, every run's samples together
    ax = axes[0]
    groups: list[tuple[str, tuple[str, ...]]] = [(f"N={n}", ("base", "publish", str(n))) for n in sizes]
    if any(dig(r, d, "scale", "publish") for r in runs for d in names):
        groups.append((f"N={top}\n10x elsewhere", ("scale", "publish", str(top))))
    if any(dig(r, d, "base", "large") for r in runs for d in names):
        groups += [("3 MiB", ("base", "large", "secret_3mib")), ("100 files", ("base", "large", "files_100"))]
    data, pos, cols = [], [], []
    for i, (_, where) in enumerate(groups):
        for j, d in enumerate(names):
            lat = pooled_latencies(runs, d, *where, "latencies_ms")
            if lat:
                data.append(lat)
                pos.append(i * 3 + j)
                cols.append(COLORS[d])
    if data:
        parts = ax.boxplot(data, positions=pos, widths=0.8, patch_artist=True, showfliers=True)
        for patch, c in zip(parts["boxes"], cols, strict=True):
            patch.set_facecolor(c)
    ax.set_xticks([i * 3 + 0.5 for i in range(len(groups))], [g[0] for g in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("NodePublishVolume latency (ms, log)")
    ax.set_title(f"Publish latency, {doc.get('repeats', 1)} run(s) pooled")
    for d in names:
        ax.plot([], [], color=COLORS[d], linewidth=8, label=d)
    ax.legend()

    width = 0.8 / max(1, len(names))

    def bars(
        ax: Any, keys: list[tuple[str, str]], labels: list[str] | None = None, fmt: str = "%.0f"
    ) -> None:
        for j, d in enumerate(names):
            vals = [_median_and_error(dig(figs, k, d)) for k, _ in keys]
            xs = [i + j * width for i in range(len(keys))]
            err = [[v[1] for v in vals], [v[2] for v in vals]]
            drawn = ax.bar(xs, [v[0] for v in vals], width, yerr=err, capsize=3, label=d, color=COLORS[d])
            if labels is None:
                ax.bar_label(drawn, fmt=fmt, fontsize=7)
            else:
                ax.bar_label(drawn, labels=[_requests(figs, d, k) for k in labels], fontsize=7)
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(keys))], [k[1] for k in keys])

    # 2. RSS per scenario: median, bar from min to max run; floors dashed
    ax = axes[1]
    rss = [
        ("rss_baseline_mib", "fresh"),
        ("rss_idle_mib", f"idle\n{top} vol"),
        ("rss_republish_peak_mib", "republish\npeak"),
        ("large_3mib_rss_mib", "after\n3 MiB"),
        ("files_100_rss_mib", "after\n100 files"),
        ("scale_rss_baseline_mib", "10x: fresh"),
        ("scale_rss_idle_mib", f"10x: idle\n{top} vol"),
    ]
    bars(ax, [k for k in rss if k[0] in figs and any(figs[k[0]].get(d) for d in names)])
    for name, style in zip(FLOOR_LINES, ("--", ":"), strict=True):
        floor = dig(doc, "floors", "summary", name, "median")
        if floor:
            ax.axhline(floor, color="#888888", linestyle=style, linewidth=1, label=f"floor: {name}")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("driver RSS (MiB)")
    ax.set_title("Driver memory per scenario (median, min..max)")
    ax.legend(fontsize=8)

    # 3. republish passes
    ax = axes[2]
    kinds = ["throttled", "unchanged", "changed"]
    bars(ax, [(f"{k}_pass_s", k) for k in kinds], labels=[f"{k}_pass_requests" for k in kinds])
    ax.set_ylabel(f"pass over {top} volumes (s)")
    ax.set_title("Republish passes (median, min..max; labels: apiserver requests)")
    ax.legend()

    # 4. driver CPU of the burst and of each pass; the row's floor as a tick over its group
    ax = axes[3]
    cpu = [(f"publish_{top}_cpu_s", f"burst\nN={top}")] + [(f"{k}_pass_cpu_s", k) for k in kinds]
    cpu = [k for k in cpu if k[0] in figs]
    bars(ax, cpu, fmt="%.2f")
    for i, (key, _) in enumerate(cpu):
        floor = dig(figs, key, "floor", "value")
        if floor is not None:
            ax.hlines(floor, i - width / 2, i + width * (len(names) - 0.5), colors="black", linewidth=2)
    ax.plot([], [], color="black", linewidth=2, label="floor (grpc.aio + requests)")
    ax.set_ylabel("driver CPU (s)")
    ax.set_title("Driver CPU (median, min..max) and its floor")
    ax.legend(fontsize=8)

    env = doc.get("environment", {})
    fig.suptitle(
        f"secrets-store CSI: ours {env.get('ours_version')} vs upstream {env.get('upstream_version')} "
        f"({env.get('cpus')} cores, {doc.get('mode')} run, "
        f"{doc.get('repeats', 1)} round(s) per driver, interleaved)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _requests(figs: dict[str, Any], driver: str, key: str) -> str:
    median = dig(figs, key, driver, "median")
    return "" if median is None else f"{median:g} req"
