"""Figures over repeated runs: median and spread per driver, the verdict rule, distance to a floor.

`make bench` runs every scenario several times with the drivers interleaved (ours, upstream, ours,
upstream, ...), so whatever else the machine does hits both alike. For one figure each driver then
has a value per run; the table shows the median and the range (min..max) and a verdict:

- won:   our median is better than upstream's and the two ranges do not overlap;
- lost:  upstream's median is better and the ranges do not overlap;
- noisy: the ranges overlap (touching ends count as overlap): the runs cannot tell the drivers apart;
- equal: every run of both drivers gave the same value (e.g. 0 requests against 0);
- 1 run: a side has a single run, so there is no range to judge by (smoke mode);
- "-":   a side has no value (driver skipped or phase failed).

"Better" is lower, except for rows marked higher-is-better (throughput).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

WON, LOST, NOISY, EQUAL, SINGLE, MISSING = "won", "lost", "noisy", "equal", "1 run", "-"
VERDICTS = (WON, LOST, NOISY, EQUAL, SINGLE, MISSING)
MIN_RUNS_FOR_VERDICT = 2


def number(x: Any) -> float | None:
    """x as a float when it is a finite number (bools and NaN are not figures)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    value = float(x)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Spread:
    """One driver's values of one figure, a value per run that produced it (in run order)."""

    runs: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("a spread needs at least one run")

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def median(self) -> float:
        return float(statistics.median(self.runs))

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": _round(self.median),
            "min": _round(self.low),
            "max": _round(self.high),
            "n": self.n,
            "runs": [_round(x) for x in self.runs],
        }


def _round(x: float) -> float:
    return round(x, 4)


def spread(values: Iterable[Any]) -> Spread | None:
    """The spread of the numeric values among `values` (None, strings, NaN are runs without the figure)."""
    nums = tuple(v for v in (number(x) for x in values) if v is not None)
    return Spread(nums) if nums else None


def overlap(a: Spread, b: Spread) -> bool:
    """Whether the ranges [min, max] of a and b share a point."""
    return a.low <= b.high and b.low <= a.high


def verdict(
    ours: Spread | None,
    upstream: Spread | None,
    *,
    higher_is_better: bool = False,
    min_runs: int = MIN_RUNS_FOR_VERDICT,
) -> str:
    """The row's verdict by the rule in the module docstring."""
    if ours is None or upstream is None:
        return MISSING
    if ours.low == ours.high == upstream.low == upstream.high:
        return EQUAL
    if min(ours.n, upstream.n) < min_runs:
        return SINGLE
    if overlap(ours, upstream):
        return NOISY
    ours_better = ours.median > upstream.median if higher_is_better else ours.median < upstream.median
    return WON if ours_better else LOST


def ratio(ours: Any, upstream: Any) -> float | None:
    """ours / upstream (1.0 when both are 0; None when upstream alone is 0 or a side is missing)."""
    a, b = number(ours), number(upstream)
    if a is None or b is None:
        return None
    if b == 0:
        return 1.0 if a == 0 else None
    return round(a / b, 3)


def above_floor(ours: Spread | None, floor: float, upstream: Spread | None) -> dict[str, Any]:
    """How far our median sits above the floor: `above` (ours - floor, in the row's unit) and `times`
    (ours / floor); `floor_above_upstream` says the floor alone is heavier than upstream's median (no
    Python driver on this runtime can win that row)."""
    if ours is None:
        return {"value": _round(floor)}
    return {
        "value": _round(floor),
        "above": _round(ours.median - floor),
        "times": ratio(ours.median, floor),
        "floor_above_upstream": None if upstream is None else floor >= upstream.median,
    }


def median_view(docs: Sequence[Any]) -> Any:
    """One document with the shape of the per-run documents, each numeric leaf the median over runs.

    Dicts are merged key by key (a key missing from a run is a run without that figure), numbers become
    their median, anything else (lists, strings, bools) is taken from the first run that has it."""
    present = [d for d in docs if d is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        dicts = [d for d in present if isinstance(d, dict)]
        keys: dict[str, None] = {}
        for d in dicts:
            keys.update(dict.fromkeys(d))
        return {k: median_view([d.get(k) for d in dicts]) for k in keys}
    nums = [number(d) for d in present]
    if all(v is not None for v in nums) and not isinstance(first, bool):
        med = statistics.median(v for v in nums if v is not None)
        if all(isinstance(d, int) for d in present) and med == int(med):
            return int(med)
        return med
    return first


def tally(verdicts: Iterable[str]) -> dict[str, int]:
    """How many rows got each verdict (every verdict listed, zeros included)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for v in verdicts:
        counts[v] = counts.get(v, 0) + 1
    return counts
