"""The run's history: every fault, pod and check as a JSON event (time, kind, detail), thread-safe.

Times are seconds since the run started (monotonic clock) plus the wall clock; a violation is an event
of kind `violation` whose detail names the invariant (1-6) and what was seen. The history is the
evidence a failed run leaves behind, written as JSON next to the timeline PNG.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VIOLATION = "violation"


@dataclass(frozen=True, slots=True)
class Event:
    t: float  # seconds since the run started
    wall: float  # time.time() at the event
    kind: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "wall": round(self.wall, 3), "kind": self.kind, "detail": self.detail}


@dataclass
class History:
    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, kind: str, **detail: Any) -> Event:
        event = Event(self.now(), time.time(), kind, detail)
        with self._lock:
            self.events.append(event)
        return event

    def violation(self, invariant: int, what: str, **detail: Any) -> Event:
        return self.record(VIOLATION, invariant=invariant, what=what, **detail)

    def of_kind(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def violations(self) -> list[Event]:
        return self.of_kind(VIOLATION)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(e.kind for e in self.events)

    def write(self, path: Path, summary: dict[str, Any]) -> None:
        with self._lock:
            events = [e.as_json() for e in self.events]
        path.write_text(json.dumps({"summary": summary, "events": events}, indent=1, sort_keys=True) + "\n")
