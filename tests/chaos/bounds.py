"""How stale a mounted version may be at a given moment, and the other stated bounds (pure).

Without faults a volume is refreshed when kubelet republishes it (every `syncFrequency`, 10 s on the
node) and the driver's rotation poll interval has passed since its last refresh; the provider's version
changes every stamp period. So a file served at version v is at most

    base = republish period + rotation interval + stamp period + slack

seconds older than the start of version v, when nothing is broken. A fault stretches that: while it is
active no refresh succeeds, and kubelet's retry backoff (doubling per failure) can add as long again
once it ends. The allowance at time t is therefore base plus twice the time covered by faults that were
active inside the lookback window, grown until it no longer changes (overlapping faults chain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# kubelet's syncFrequency on the node (node/kubelet-config.yaml) plus its jitter and a pod worker's lag.
REPUBLISH_SECONDS = 15.0
SLACK_SECONDS = 10.0
BACKOFF_FACTOR = 2.0
# A deleted pod's tmpfs, SPCPS and synced Secret go (kubelet teardown, garbage collector) within this.
LEFTOVER_GRACE_SECONDS = 60.0
# Invariant 6: after the faults stop, everything is converged within this.
CONVERGENCE_SECONDS = 120.0
# Invariant 4: the driver process stays under these (bench: ~65 MiB idle with 110 volumes).
RSS_LIMIT_MIB = 160.0
FDS_LIMIT = 256
THREADS_LIMIT = 64


@dataclass
class Interval:
    kind: str
    start: float  # seconds since the run started
    end: float | None  # None: still active

    def length_within(self, lo: float, hi: float) -> float:
        end = hi if self.end is None else self.end
        return max(0.0, min(end, hi) - max(self.start, lo))

    def touches(self, lo: float, hi: float) -> bool:
        end = hi if self.end is None else self.end
        return self.start <= hi and end >= lo


def base_staleness(rotation_seconds: float, stamp_period: float) -> float:
    return REPUBLISH_SECONDS + rotation_seconds + stamp_period + SLACK_SECONDS


def covered(intervals: Sequence[Interval], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] during which at least one fault was active (overlaps counted once)."""
    spans = sorted(
        (max(i.start, lo), min(hi if i.end is None else i.end, hi)) for i in intervals if i.touches(lo, hi)
    )
    total, reach = 0.0, lo
    for start, end in spans:
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def allowance(intervals: Sequence[Interval], now: float, base: float) -> float:
    """The staleness allowed at `now`: base + BACKOFF_FACTOR x fault time inside the lookback."""
    allowed = base
    for _ in range(20):
        grown = base + BACKOFF_FACTOR * covered(intervals, now - allowed, now)
        if grown <= allowed + 1e-6:
            return allowed
        allowed = grown
    return allowed


def leftover_grace(intervals: Sequence[Interval], since: float, now: float, base: float) -> float:
    """How long something of a deleted pod may linger when first seen at `since`: LEFTOVER_GRACE_SECONDS
    plus BACKOFF_FACTOR x the fault time from a base look-back before it appeared until now (kubelet's
    unmount retries and the garbage collector's requeues back off while the control plane is down)."""
    return LEFTOVER_GRACE_SECONDS + BACKOFF_FACTOR * covered(intervals, since - base, now)


def longest_active(intervals: Sequence[Interval], lo: float, hi: float) -> float:
    """The longest single fault that overlapped [lo, hi] (for the report)."""
    return max((i.length_within(float("-inf"), hi) for i in intervals if i.touches(lo, hi)), default=0.0)
