"""The seeded fault schedule (pure): which fault starts when and how long it is held.

`plan` draws from `random.Random(seed)` only, so a seed replays the same schedule. Faults overlap
(the gap between starts is drawn independently of how long each is held) but a kind is never started
again while its previous fault is held. With `every_kind` each kind comes once, in a drawn order,
before any repeats, and the gaps shrink so that all of them fit the window: the short version in
`make test` sees every fault kind this machine can produce.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

FIRST_START = 2.0  # seconds into the fault window
MIN_HOLD = 2.0


@dataclass(frozen=True, slots=True)
class Planned:
    start: float  # seconds since the fault window opened
    kind: str
    hold: float  # seconds between inject() and heal()


def plan(
    rng: random.Random,
    max_seconds: Mapping[str, float],
    window: float,
    mean_gap: float,
    every_kind: bool,
) -> list[Planned]:
    """Faults for `window` seconds: starts about `mean_gap` apart (uniform 0.3..1.7 of it), each held
    for 0.3..1.0 of its kind's max_seconds and released by the end of the window."""
    kinds = sorted(max_seconds)
    if not kinds:
        return []
    if every_kind:
        # the longest draw (1.7 gaps each) still starts every kind inside the window
        mean_gap = min(mean_gap, (window - FIRST_START - MIN_HOLD) / (1.7 * len(kinds)))
    first_round = rng.sample(kinds, len(kinds)) if every_kind else []
    busy_until = dict.fromkeys(kinds, 0.0)
    out: list[Planned] = []
    t = FIRST_START
    while t < window - MIN_HOLD:
        wanted = first_round[0] if first_round else rng.choice(kinds)
        if busy_until[wanted] > t:
            free = [k for k in kinds if busy_until[k] <= t and (not first_round or k in first_round)]
            if not free:
                t = min(v for k, v in busy_until.items() if not first_round or k in first_round)
                continue
            wanted = rng.choice(free)
        if wanted in first_round:
            first_round.remove(wanted)
        hold = max(MIN_HOLD, min(rng.uniform(0.3, 1.0) * max_seconds[wanted], window - t))
        out.append(Planned(round(t, 3), wanted, round(hold, 3)))
        busy_until[wanted] = t + hold
        t += rng.uniform(0.3, 1.7) * mean_gap
    return out


def kinds_count(planned: list[Planned]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return dict(sorted(counts.items()))
