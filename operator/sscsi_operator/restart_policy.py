"""When a workload whose pods' mounted secrets rotated gets a rolling restart: pure decisions, no I/O.

Inputs are what the driver records per mounted volume in a SecretProviderClassPodStatus (SPCPS): the
object versions. A workload opted in by annotation is restarted:

- once per change: a change is (SPC, object id) -> new version; the versions a restart was made for
  are remembered, so the workload's other pods catching up with the same rotation later (kubelet
  republishes each pod on its own schedule) add nothing;
- debounced: the first change of a workload opens a window (at least the driver's rotation poll
  interval); every change seen in the window joins the same restart;
- never more often than the minimum interval: a provider answering a new version on every call
  restarts a workload at most once per interval, however often the SPCPS changes;
- never for new pods: a status seen for the first time (a new pod, or the operator starting) is only
  recorded. Pods a restart creates mount the new content and so report no change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: The annotation a Deployment, StatefulSet or DaemonSet carries to opt in (value "true").
RESTART_ANNOTATION = "secrets-store.csi.k8s.io/restart-on-rotation"
#: What `kubectl rollout restart` sets on the pod template; the same mechanism is used.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
#: The Event reason on the restarted workload.
EVENT_REASON = "SecretRotationRestart"

MIN_WINDOW_SECONDS = 5.0
DEFAULT_MINIMUM_INTERVAL_SECONDS = 300


@dataclass(frozen=True, order=True)
class Workload:
    namespace: str
    kind: str  # Deployment, StatefulSet or DaemonSet
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class ObjectChange:
    spc: str
    object_id: str
    old: str | None
    new: str


@dataclass(frozen=True)
class PlannedRestart:
    workload: Workload
    changes: tuple[ObjectChange, ...]
    pods: tuple[str, ...]

    def message(self) -> str:
        """The Event text: which SPC, which objects, old -> new versions (never contents)."""
        by_spc: dict[str, list[str]] = {}
        for change in self.changes:
            by_spc.setdefault(change.spc, []).append(
                f"{change.object_id} {change.old or '(none)'} -> {change.new}"
            )
        parts = [f"SecretProviderClass {spc}: {', '.join(items)}" for spc, items in sorted(by_spc.items())]
        pods = ", ".join(self.pods[:5]) + (f" and {len(self.pods) - 5} more" if len(self.pods) > 5 else "")
        return f"rolling restart after secret rotation: {'; '.join(parts)} (mounted by pod {pods})"[:1024]


def version_changes(spc: str, old: Mapping[str, str], new: Mapping[str, str]) -> tuple[ObjectChange, ...]:
    """The objects whose version differs (or that appeared); objects that disappeared are no change."""
    return tuple(
        ObjectChange(spc, object_id, old.get(object_id), version)
        for object_id, version in sorted(new.items())
        if old.get(object_id) != version
    )


@dataclass
class _Pending:
    opened_at: float
    changes: dict[tuple[str, str], ObjectChange] = field(default_factory=dict)
    pods: list[str] = field(default_factory=list)


@dataclass
class RestartPlanner:
    """Per-workload debounce and rate limit. `now` is a monotonic clock in seconds."""

    window_seconds: float = MIN_WINDOW_SECONDS
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL_SECONDS
    _pending: dict[Workload, _Pending] = field(default_factory=dict)
    _restarted_at: dict[Workload, float] = field(default_factory=dict)
    _handled: dict[Workload, dict[tuple[str, str], str]] = field(default_factory=dict)

    def observe(self, workload: Workload, pod: str, changes: tuple[ObjectChange, ...], now: float) -> bool:
        """Record a pod's changed versions; True when they add something to restart for."""
        handled = self._handled.get(workload, {})
        fresh = [c for c in changes if handled.get((c.spc, c.object_id)) != c.new]
        if not fresh:
            return False
        pending = self._pending.setdefault(workload, _Pending(opened_at=now))
        for change in fresh:
            key = (change.spc, change.object_id)
            earlier = pending.changes.get(key)
            old = earlier.old if earlier is not None else change.old
            pending.changes[key] = ObjectChange(change.spc, change.object_id, old, change.new)
        if pod not in pending.pods:
            pending.pods.append(pod)
        return True

    def next_due(self, workload: Workload) -> float | None:
        """When the workload's pending restart may happen (None: nothing pending)."""
        pending = self._pending.get(workload)
        if pending is None:
            return None
        debounced = pending.opened_at + max(self.window_seconds, MIN_WINDOW_SECONDS)
        last = self._restarted_at.get(workload)
        return debounced if last is None else max(debounced, last + self.minimum_interval_seconds)

    def due(self, now: float) -> list[PlannedRestart]:
        """Restarts to make now, oldest first; each is pending until `restarted` or `dropped`."""
        ready = [w for w in self._pending if (at := self.next_due(w)) is not None and at <= now]
        return [
            PlannedRestart(
                workload,
                tuple(
                    self._pending[workload].changes[key] for key in sorted(self._pending[workload].changes)
                ),
                tuple(self._pending[workload].pods),
            )
            for workload in sorted(ready, key=lambda w: self._pending[w].opened_at)
        ]

    def restarted(self, plan: PlannedRestart, now: float) -> None:
        """The restart was made: its versions are handled, the interval starts now."""
        self._pending.pop(plan.workload, None)
        self._restarted_at[plan.workload] = now
        handled = self._handled.setdefault(plan.workload, {})
        for change in plan.changes:
            handled[(change.spc, change.object_id)] = change.new

    def dropped(self, workload: Workload) -> None:
        """Forget a pending restart (the workload is gone or no longer opted in)."""
        self._pending.pop(workload, None)

    def pending(self) -> list[Workload]:
        return sorted(self._pending)

    def earliest_due(self) -> float | None:
        times = [at for w in self._pending if (at := self.next_due(w)) is not None]
        return min(times) if times else None
