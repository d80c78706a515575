"""Provider faults: the reference provider's Mount made to hang, answer slowly or answer garbage.

They share the provider's one fault slot (`/fault?mode=`), so `ProviderModes` keeps the modes of the
active faults in the order they were injected: the provider always runs the newest one, and healing a
fault puts back the newest one still active (`none` when there is none). A provider restarted meanwhile
(provider-kill) starts with `none`; a heal that finds no provider container leaves it at that.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from .faults import ChaosNode, FaultError
from .faults_host import netns_get

APPLY_SECONDS = 20.0  # a provider container that was just (re)started needs a moment to listen


class ProviderModes:
    """The provider's fault slot, shared by the provider-* faults (thread-safe)."""

    def __init__(self, ctx: ChaosNode) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._active: list[tuple[str, str]] = []  # (kind, query), oldest first

    def set(self, kind: str, query: str) -> None:
        with self._lock:
            self._active = [(k, q) for k, q in self._active if k != kind] + [(kind, query)]
            self._apply(query, healing=False)

    def clear(self, kind: str) -> None:
        with self._lock:
            self._active = [(k, q) for k, q in self._active if k != kind]
            self._apply(self._active[-1][1] if self._active else "none", healing=True)

    def _apply(self, query: str, *, healing: bool) -> None:
        mode = query.split("&", 1)[0]
        deadline = time.monotonic() + APPLY_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            found = self.ctx.containers(self.ctx.provider)
            if not found and healing:
                return  # the next provider process starts without a fault
            for provider in found:
                try:
                    body = netns_get(provider.pid, f"http://127.0.0.1:8080/fault?mode={query}")
                except OSError as err:
                    last = err
                    continue
                if body.strip() != f"fault set to {mode}":
                    raise FaultError(f"provider answered {body.strip()!r} to /fault?mode={query}")
                return
            time.sleep(0.5)
        raise FaultError(
            f"could not set the provider's fault to {query!r}: {last or 'no provider container'}"
        )


@dataclass
class ProviderMode:
    """One provider fault: `query` is what follows `/fault?mode=` (e.g. ``slow&seconds=4``)."""

    kind: str
    modes: ProviderModes
    query: str
    max_seconds: float

    def probe(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root to enter the provider pod's network namespace"
        try:
            state = self.modes.ctx.provider_control("/state")
        except (FaultError, OSError) as err:
            return f"the reference provider's control endpoint does not answer: {err}"
        if '"hung_mounts"' not in state:
            return "the running provider image predates the hang/garbage modes (rebuild it: hack/images.sh)"
        return None

    def inject(self) -> None:
        self.modes.set(self.kind, self.query)

    def heal(self) -> None:
        self.modes.clear(self.kind)
