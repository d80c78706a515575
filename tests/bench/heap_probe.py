"""What the driver's heap holds, sampled inside its process during a soak, for finding what grows.

    SSCSI_BENCH_HEAP_DIR=/tmp/heap python -m bench.scale --only soak --drivers ours    # then:
    python -m bench.heap_probe /tmp/heap [--from 120]

Only with `bench.task_probe` (ours under the soak). Every `SSCSI_BENCH_HEAP_EVERY` seconds (60) the probe
writes `heap-<seconds>.json` into the directory: VmRSS, glibc's malloc totals (mallinfo2: in use, free,
mmapped), resident KiB per kind of mapping (/proc/self/smaps), pymalloc's blocks and arenas, the count of
every object type the collector tracks and of the untracked ones they hold (str, bytes, atomic dicts), the
largest containers; with `SSCSI_BENCH_HEAP_COLLECT=1` after a full collection, counting what it freed;
and with `SSCSI_BENCH_TRACEMALLOC=<frames>` (tracemalloc started before the driver imports) a
`heap-<seconds>.tracemalloc` snapshot. `python -m bench.heap_probe <dir>` compares the first sample at or
after `--from` seconds with the last one. The collection and tracemalloc change what they measure (the
driver's RSS and CPU), so a diagnosis run is never a verdict run.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

DIR_ENV = "SSCSI_BENCH_HEAP_DIR"
FRAMES_ENV = "SSCSI_BENCH_TRACEMALLOC"
EVERY_ENV = "SSCSI_BENCH_HEAP_EVERY"
COLLECT_ENV = "SSCSI_BENCH_HEAP_COLLECT"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> dict[str, int] | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    fn.restype = _MallInfo2
    info = fn()
    return {"in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd, "arena": info.arena}


def _status_kib() -> dict[str, int]:
    wanted = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


def _mapping_class(start: int, end: int, path: str) -> str:
    """Where a mapping's resident pages belong: brk heap, file (by name), or anonymous by size (pymalloc
    arenas are 1 MiB, glibc's thread arenas 64 MiB reservations, thread stacks 8 MiB)."""
    if path.startswith("["):
        return path
    if path:
        return "file:" + path.rsplit("/", 1)[-1]
    size = end - start
    if size <= 1 << 20:
        return "anon<=1MiB"
    if size <= 16 << 20:
        return "anon<=16MiB"
    return "anon>16MiB"


def rss_by_mapping() -> dict[str, int]:
    """Resident KiB per mapping class, from /proc/self/smaps."""
    out: Counter[str] = Counter()
    where = "?"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and not head[0].endswith(":"):
            start, _, end = head[0].partition("-")
            where = _mapping_class(int(start, 16), int(end, 16), head[5] if len(head) > 5 else "")
        elif head[0] == "Rss:":
            out[where] += int(head[1])
    return dict(out)


def _type_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def pymalloc_stats() -> dict[str, int]:
    """pymalloc's arenas (1 MiB each) and how full they are, from sys._debugmallocstats (written to the C
    stderr: fd 2 points at a temporary file meanwhile)."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    wanted = {
        "# arenas allocated current": "arenas",
        "# arenas highwater mark": "arenas_highwater",
        "# bytes in allocated blocks": "allocated_bytes",
        "# bytes in available blocks": "available_bytes",
    }
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in wanted:
            out[wanted[key.strip()]] = int(value.strip().replace(",", ""))
        elif "unused pools" in key:
            out["unused_pool_bytes"] = int(value.strip().replace(",", ""))
    return out


def _hint(obj: object) -> str:
    if isinstance(obj, dict):
        return repr(list(obj.items())[:2])[:160]
    if isinstance(obj, (list, tuple, deque)):
        return repr(list(obj)[:2])[:160]
    return repr(obj)[:160]


def reachable_untracked(objects: list[object], top: int = 25) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Objects the collector does not track (str, bytes, int, float, dicts of only those...) referenced by
    the tracked ones, counted once each by type; and the largest containers (tracked or not)."""
    types: Counter[str] = Counter()
    seen: set[int] = set()
    sizes: list[tuple[int, int, object]] = []
    for obj in objects:
        if isinstance(obj, (dict, list, set, deque)):
            sizes.append((len(obj), id(obj), obj))
        for ref in gc.get_referents(obj):
            if gc.is_tracked(ref) or id(ref) in seen:
                continue
            seen.add(id(ref))
            types[_type_name(ref)] += 1
            if isinstance(ref, (dict, list, set, deque)):
                sizes.append((len(ref), id(ref), ref))
    sizes.sort(key=lambda entry: -entry[0])
    largest = [
        {"len": n, "id": ident, "type": _type_name(obj), "hint": _hint(obj)} for n, ident, obj in sizes[:top]
    ]
    return dict(types), largest


def heap_sample(started: float, collect: bool = False) -> dict[str, Any]:
    """The heap now (in the loop's thread, so no task runs meanwhile); `collect`: after a full collection
    (else unreachable cycles the collector has not reached yet are counted too, as the driver holds them)."""
    garbage: dict[str, int] | None = None
    if collect:  # what a full collection frees (cycles only the collector can free), then freed
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            garbage = dict(Counter(_type_name(o) for o in gc.garbage))
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
        gc.collect()
    objects = gc.get_objects()
    types = Counter(_type_name(o) for o in objects)
    untracked, largest = reachable_untracked(objects)
    del objects
    return {
        "t": round(time.monotonic() - started, 1),
        "rss_kib": _status_kib().get("VmRSS", 0),
        "status_kib": _status_kib(),
        "rss_by_mapping_kib": rss_by_mapping(),
        "malloc": _mallinfo(),
        "allocated_blocks": sys.getallocatedblocks(),
        "pymalloc": pymalloc_stats(),
        "gc_objects": sum(types.values()),
        "types": dict(types),
        "untracked_types": untracked,
        "garbage_types": garbage,
        "largest_containers": largest,
        "tracemalloc_kib": tracemalloc.get_traced_memory()[0] // 1024 if tracemalloc.is_tracing() else None,
    }


def start(loop_of: Callable[[], asyncio.AbstractEventLoop | None]) -> None:
    """Start sampling when DIR_ENV is set; call before the driver's modules are imported."""
    target = os.environ.get(DIR_ENV)
    if not target:
        return
    frames = int(os.environ.get(FRAMES_ENV) or 0)
    if frames > 0:
        tracemalloc.start(frames)
    every = float(os.environ.get(EVERY_ENV) or 60)
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_sample_forever, args=(loop_of, out, every), daemon=True).start()


def _sample_forever(loop_of: Callable[[], asyncio.AbstractEventLoop | None], out: Path, every: float) -> None:
    started = time.monotonic()
    while True:
        time.sleep(every - (time.monotonic() - started) % every)
        loop = loop_of()
        if loop is None or loop.is_closed() or not loop.is_running():
            continue

        async def sample() -> dict[str, Any]:
            return heap_sample(started, collect=os.environ.get(COLLECT_ENV) == "1")

        try:
            doc = asyncio.run_coroutine_threadsafe(sample(), loop).result(timeout=30)
        except Exception:  # a busy or stopping loop: next time
            continue
        name = f"heap-{int(doc['t']):05d}"
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(out / f"{name}.tracemalloc"))
        (out / f"{name}.json").write_text(json.dumps(doc))


def compare(directory: Path, from_s: float, top: int) -> None:
    samples = sorted(directory.glob("heap-*.json"))
    docs = [json.loads(p.read_text()) for p in samples]
    first = next((d for d in docs if d["t"] >= from_s), docs[0])
    last = docs[-1]
    print(
        "t(s) rss_kib malloc_in_use malloc_free mmapped blocks gc_objects tracemalloc_kib"
        " pymalloc:arenas,allocated,available,unused_pools"
    )
    for d in docs:
        m, p = d.get("malloc") or {}, d.get("pymalloc") or {}
        print(
            d["t"],
            d["rss_kib"],
            m.get("in_use"),
            m.get("free"),
            m.get("mmapped"),
            d["allocated_blocks"],
            d["gc_objects"],
            d.get("tracemalloc_kib"),
            p.get("arenas"),
            p.get("allocated_bytes"),
            p.get("available_bytes"),
            p.get("unused_pool_bytes"),
        )
    for label, key in (("status", "status_kib"), ("RSS by mapping", "rss_by_mapping_kib")):
        a, b = first.get(key) or {}, last.get(key) or {}
        moved = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
        print(f"\n{label} (KiB) t={first['t']} -> t={last['t']}:")
        for k in sorted(moved, key=lambda k: -abs(moved[k]))[:12]:
            print(f"  {k}: {a.get(k, 0)} -> {b.get(k, 0)} ({moved[k]:+d})")
    grown = Counter(last["types"])
    grown.subtract(first["types"])
    print(f"\nobject types grown from t={first['t']} to t={last['t']}:")
    for name, delta in grown.most_common(top):
        if delta > 0:
            print(f"  {delta:+6d}  {name} ({first['types'].get(name, 0)} -> {last['types'].get(name, 0)})")
    for d in docs:
        if d.get("garbage_types"):
            top_garbage = Counter(d["garbage_types"]).most_common(8)
            print(f"garbage freed at t={d['t']}: {sum(d['garbage_types'].values())} objects, {top_garbage}")
    grown = Counter(last.get("untracked_types") or {})
    grown.subtract(first.get("untracked_types") or {})
    print(f"\nuntracked objects reachable from tracked ones, grown from t={first['t']} to t={last['t']}:")
    for name, delta in grown.most_common(top):
        if delta > 0:
            print(f"  {delta:+6d}  {name}")
    before = {c["id"]: c["len"] for c in first.get("largest_containers") or []}
    print(f"\nlargest containers at t={last['t']} (len at t={first['t']}):")
    for c in last.get("largest_containers") or []:
        print(f"  {c['len']:6d} ({before.get(c['id'], '-')})  {c['type']}  {c['hint'][:110]}")
    snaps = [directory / f"heap-{int(d['t']):05d}.tracemalloc" for d in (first, last)]
    if all(s.exists() for s in snaps):
        old, new = (tracemalloc.Snapshot.load(str(s)) for s in snaps)
        print("\ntracemalloc, grown, by traceback:")
        for stat in new.compare_to(old, "traceback")[:top]:
            if stat.size_diff <= 0:
                continue
            print(f"  {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks")
            for line in stat.traceback.format(limit=6):
                print("     ", line)


def main() -> int:
    parser = argparse.ArgumentParser(description="compare the heap samples of a soak")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--from", dest="from_s", type=float, default=120.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    compare(args.directory, args.from_s, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
