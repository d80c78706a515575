"""Runs a fault schedule: each planned fault in a worker thread (inject, hold, heal), recorded.

Every fault leaves `fault-inject` and `fault-heal` events (and `fault-error` when inject or heal
raised) and an `Interval` from the start of inject() to the end of heal(): what the invariant bounds
add while it overlaps a check (bounds.py). `stop()` heals whatever is still held, at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .bounds import Interval
from .faults import Fault
from .history import History
from .schedule import Planned


@dataclass
class _Held:
    fault: Fault
    interval: Interval
    released: threading.Event


class FaultRunner:
    def __init__(self, faults: Mapping[str, Fault], history: History) -> None:
        self._faults = dict(faults)
        self._history = history
        self._lock = threading.Lock()
        self._intervals: list[Interval] = []
        self._threads: list[threading.Thread] = []
        self._held: list[_Held] = []
        self._stopping = threading.Event()
        self.injected: dict[str, int] = {}

    def intervals(self) -> list[Interval]:
        """Every fault so far; one still held has end None."""
        with self._lock:
            return list(self._intervals)

    def active(self) -> list[str]:
        with self._lock:
            return sorted(h.fault.kind for h in self._held)

    def start(self, planned: Sequence[Planned]) -> None:
        """Starts the schedule now (times relative to this call); returns at once."""
        opened = time.monotonic()
        for item in planned:
            thread = threading.Thread(
                target=self._one, args=(item, opened), name=f"fault-{item.kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _one(self, item: Planned, opened: float) -> None:
        if self._stopping.wait(max(0.0, opened + item.start - time.monotonic())):
            return
        fault = self._faults[item.kind]
        interval = Interval(item.kind, self._history.now(), None)
        held = _Held(fault, interval, threading.Event())
        with self._lock:
            self._intervals.append(interval)
            self._held.append(held)
        self._history.record("fault-inject", fault=item.kind, hold=item.hold)
        try:
            fault.inject()
            with self._lock:  # counted once it happened
                self.injected[item.kind] = self.injected.get(item.kind, 0) + 1
        except Exception as err:  # a fault that could not be produced is evidence, not a crash
            self._history.record("fault-error", fault=item.kind, phase="inject", error=repr(err)[:500])
        self._stopping.wait(item.hold)
        self._release(held)

    def _release(self, held: _Held) -> None:
        with self._lock:
            if held.released.is_set():
                return
            held.released.set()
        try:
            held.fault.heal()
        except Exception as err:
            self._history.record("fault-error", fault=held.fault.kind, phase="heal", error=repr(err)[:500])
        with self._lock:
            held.interval.end = self._history.now()
            self._held.remove(held)
        self._history.record("fault-heal", fault=held.fault.kind)

    def stop(self, timeout: float = 120.0) -> None:
        """Heals everything held, cancels what has not started; waits for the workers."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self._held)
        for held in left:
            self._release(held)
