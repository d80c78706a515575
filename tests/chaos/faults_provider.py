"""Provider faults: the reference provider's Mount made to hang, answer slowly or answer garbage.

They share the provider's one fault slot (`/fault?mode=`), so `ProviderModes` keeps the modes of the
active faults in the order they were injected: the provider runs the newest one, and healing a fault
puts back the newest one still active (`none` when there is none). While any is active a keeper thread
holds the provider to it: a provider restarted meanwhile (provider-kill; it starts with `none`) gets the
mode again within about a second, and an inject while kubelet's back-off keeps the provider down
returns at once, the mode following when the provider is back.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass

from .faults import ChaosNode, FaultError
from .faults_host import netns_get

APPLY_SECONDS = 5.0  # a provider container that was just (re)started needs a moment to listen
KEEP_INTERVAL = 1.0


class ProviderModes:
    """The provider's fault slot, shared by the provider-* faults (thread-safe)."""

    def __init__(self, ctx: ChaosNode) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._active: list[tuple[str, str]] = []  # (kind, query), oldest first
        self._applied: tuple[str, str] | None = None  # (container id, query) the provider confirmed
        self._keeper: threading.Thread | None = None

    def set(self, kind: str, query: str) -> None:
        with self._lock:
            self._active = [(k, q) for k, q in self._active if k != kind] + [(kind, query)]
            self._sync(APPLY_SECONDS)
            self._keep()

    def clear(self, kind: str) -> None:
        with self._lock:
            self._active = [(k, q) for k, q in self._active if k != kind]
            self._sync(APPLY_SECONDS)
            self._keep()

    @property
    def _wanted(self) -> str:
        return self._active[-1][1] if self._active else "none"

    def _settled(self) -> bool:
        """Nothing left to hold: no fault active, and the provider confirmed `none` (or none runs)."""
        return not self._active and (self._applied is None or self._applied[1] == "none")

    def _sync(self, seconds: float) -> None:
        """Bring the running provider to the wanted mode; one that does not run is left to the keeper."""
        query = self._wanted
        deadline = time.monotonic() + seconds
        while True:
            found = self.ctx.containers(self.ctx.provider)
            if not found:
                self._applied = None  # the next provider process starts with `none`
                return
            provider = found[0]
            if self._applied == (provider.id, query):
                return
            try:
                body = netns_get(provider.pid, f"http://127.0.0.1:8080/fault?mode={query}", timeout=3.0)
            except OSError:
                if time.monotonic() >= deadline:
                    return  # the keeper tries again
                time.sleep(0.5)
                continue
            mode = query.split("&", 1)[0]
            if body.strip() != f"fault set to {mode}":
                raise FaultError(f"provider answered {body.strip()!r} to /fault?mode={query}")
            self._applied = (provider.id, query)
            return

    def _keep(self) -> None:
        if not self._settled() and (self._keeper is None or not self._keeper.is_alive()):
            self._keeper = threading.Thread(target=self._hold, name="provider-modes", daemon=True)
            self._keeper.start()

    def _hold(self) -> None:
        while True:
            time.sleep(KEEP_INTERVAL)
            with self._lock:
                if self._settled():
                    self._keeper = None
                    return
                with contextlib.suppress(FaultError):  # a refused mode: set() raised it already
                    self._sync(0.0)


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
