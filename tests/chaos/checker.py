"""Invariants 1-4, checked every few seconds in a thread of its own (its own Kube client).

One round reads the API (every pod on the node, the run's SPCPS and synced Secrets), the node's
mountinfo and every ready pod's volumes, and records a `check` event, a `violation` for each broken
invariant, and a `driver` sample. A round the apiserver cannot answer (a fault) is recorded as
`check-skipped`. `converged` says whether the last round found everything as it must be with no fault
allowance at all: every pod of the run Ready with current files, nothing left of a deleted pod.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.nodekit import Kube
from sscsi_kube import ApiError

from . import bounds, hostfs, procwatch, stamps
from .bounds import Interval
from .history import History
from .load import STAMP_PERIOD_SECONDS, Registry, TrackedPod
from .verdicts import Lingering, judge_secret, judge_volume

MANAGED = "secrets-store.csi.k8s.io/managed=true"
CLOCK_STEP_SECONDS = 1.0  # a wall-clock jump beyond this (time sync on a VM) is recorded and allowed for


@dataclass
class Tally:
    rounds: int = 0
    skipped: int = 0
    volumes_checked: int = 0
    rotations: int = 0
    bytes_lost: int = 0
    digests: set[str] = field(default_factory=set)
    last_version: dict[tuple[str, str], int] = field(default_factory=dict)
    driver_peak: dict[str, float] = field(default_factory=dict)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class Checker:
    def __init__(
        self,
        kube: Kube,
        registry: Registry,
        history: History,
        intervals: Callable[[], Sequence[Interval]],
        rotation_seconds: float,
    ) -> None:
        self._kube = kube
        self._registry = registry
        self._history = history
        self._intervals = intervals
        self.base = bounds.base_staleness(rotation_seconds, STAMP_PERIOD_SECONDS)
        self.tally = Tally()
        self.converged = False
        self._lingering = Lingering()
        self._reported: set[str] = set()
        self._clock_offset = time.time() - time.monotonic()
        self.clock_steps: list[Interval] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, every: float) -> None:
        self._thread = threading.Thread(target=self._loop, args=(every,), name="chaos-check", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def _loop(self, every: float) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.round()
            self._stop.wait(max(0.5, every - (time.monotonic() - started)))

    def _all_intervals(self) -> list[Interval]:
        """The faults, and every step of the wall clock as if it were one (stamps are wall-clock based:
        a clock stepped forward by n seconds makes every file look n seconds older)."""
        offset = time.time() - time.monotonic()
        step = offset - self._clock_offset
        if abs(step) > CLOCK_STEP_SECONDS:
            self._clock_offset = offset
            now = self._history.now()
            self.clock_steps.append(Interval("clock-step", now - abs(step), now))
            self._history.record("clock-step", seconds=round(step, 3))
        return [*self._intervals(), *self.clock_steps]

    def round(self) -> bool:
        """One check. Returns whether everything had converged (no fault allowance needed)."""
        now = self._history.now()
        fault_part = bounds.allowance(self._all_intervals(), now, self.base) - self.base
        ns = self._registry.namespace
        self._driver()  # on the host: sampled even while the apiserver is down
        try:
            pods = self._kube.get("pods", "", None, "-A")["items"]
            secrets = self._kube.get("secrets", "", ns, "-l", MANAGED)["items"]
            statuses = self._kube.get("secretproviderclasspodstatuses", "", ns)["items"]
        except (ApiError, AssertionError, OSError) as err:
            self.tally.skipped += 1
            self._history.record("check-skipped", error=str(err)[:200])
            self.converged = False
            return False
        self.tally.rounds += 1
        pending = self._track(pods)
        problems = self._volumes(pods, self.base + fault_part)
        problems += self._secrets(secrets)
        lingering = self._leftovers(pods, statuses, secrets)
        self.converged = problems == 0 and pending == 0 and lingering == 0
        self._history.record(
            "check",
            pods=len([p for p in pods if p["metadata"]["namespace"] == ns]),
            allowed_age=round(self.base + fault_part, 1),
            unconverged=problems,
            pending=pending,
            lingering=lingering,
        )
        return self.converged

    def _track(self, pods: list[dict[str, Any]]) -> int:
        """Ready and gone times of the run's pods; how many are not yet where they must end up."""
        live = {p["metadata"]["uid"]: p for p in pods}
        now, pending = self._history.now(), 0
        for tracked in self._registry.snapshot():
            pod = live.get(tracked.uid)
            if pod is None:
                if tracked.gone is None:
                    tracked.gone = now
                    self._history.record("pod-gone", pod=tracked.name)
                if tracked.deleted is None:
                    pending += 1  # the run never deleted it: an eviction or a loss
            elif tracked.deleted is not None:
                pending += 1  # deleted, still terminating
            elif _ready(pod):
                if tracked.ready is None:
                    tracked.ready = now
                    self._history.record("pod-ready", pod=tracked.name, after=round(now - tracked.created, 1))
            else:
                pending += 1
        return pending

    def _volumes(self, pods: list[dict[str, Any]], allowed: float) -> int:
        """Invariant 1 over every ready pod of the run that the run has not asked to delete."""
        ready = {
            p["metadata"]["uid"] for p in pods if _ready(p) and not p["metadata"].get("deletionTimestamp")
        }
        problems = 0
        for tracked in self._registry.snapshot():
            if tracked.uid not in ready or tracked.deleted is not None:
                continue
            for volume, spc_name in tracked.volumes:
                problems += self._volume(tracked, volume, spc_name, allowed)
        return problems

    def _volume(self, tracked: TrackedPod, volume: str, spc_name: str, allowed: float) -> int:
        """1 when the volume breaks invariant 1 or is older than the fault-free bound, else 0."""
        spec = self._registry.specs[spc_name]
        where = f"{self._registry.namespace}/{tracked.name}/{volume}"
        try:
            files = hostfs.read_generation(hostfs.target_path(tracked.uid, volume))
            read_at = time.time()
        except hostfs.VolumeUnreadable as err:
            if tracked.deleted is not None:
                return 0  # deleted while being read
            ns = self._registry.namespace
            self.tally.bytes_lost += sum(
                len(stamps.line(spec.salt, ns, tracked.name, o, 0)) for o in spec.objects
            )
            self._history.violation(1, "volume unreadable", volume=where, error=str(err))
            return 1
        verdict = judge_volume(
            files, spec, self._registry.namespace, tracked.name, read_at, STAMP_PERIOD_SECONDS, allowed
        )
        if tracked.deleted is not None:
            return 0
        self.tally.volumes_checked += 1
        self.tally.digests.update(verdict.digests)
        key = (tracked.uid, volume)
        if verdict.version is not None:
            last = self.tally.last_version.get(key)
            if last is not None and verdict.version > last:
                self.tally.rotations += 1
            self.tally.last_version[key] = max(verdict.version, last or 0)
        if verdict.problems:
            self.tally.bytes_lost += verdict.lost_bytes
            self._history.violation(1, "volume content", volume=where, problems=verdict.problems)
            return 1
        return 1 if verdict.age > self.base else 0  # within the fault allowance, not yet converged

    def _secrets(self, secrets: list[dict[str, Any]]) -> int:
        """Invariant 2: a synced Secret holds a stamp of a pod that mounted it; its owners exist (after
        the garbage collector's grace: it removes references to deleted owners)."""
        by_secret = {s.secret: s for s in self._registry.specs.values() if s.secret}
        problems = 0
        for secret in secrets:
            name = secret["metadata"]["name"]
            spec = by_secret.get(name)
            if spec is None:
                problems += 1
                self._history.violation(2, "a synced Secret the run does not sync", secret=name)
                continue
            mounted_by = [
                p.name for p in self._registry.snapshot() if any(s == spec.name for _, s in p.volumes)
            ]
            data = {k: str(v) for k, v in (secret.get("data") or {}).items()}
            found, digests = judge_secret(data, spec, self._registry.namespace, mounted_by)
            self.tally.digests.update(digests)
            if found:
                problems += 1
                self._history.violation(2, "Secret content", secret=name, problems=found)
        return problems

    def _leftovers(
        self,
        pods: list[dict[str, Any]],
        statuses: list[dict[str, Any]],
        secrets: list[dict[str, Any]],
    ) -> int:
        """Invariants 2 (owners) and 3: no tmpfs, SPCPS or synced Secret outliving its pod or owner
        longer than its grace (bounds.leftover_grace: faults while it lingered stretch it)."""
        live_pods = {p["metadata"]["uid"] for p in pods}
        live_statuses = {s["metadata"]["uid"] for s in statuses}
        alive = live_pods | live_statuses
        present: list[str] = []
        for mount in hostfs.csi_tmpfs_mounts():
            if mount.pod_uid not in live_pods:
                present.append(f"tmpfs {mount.path} without its pod")
        for status in statuses:
            owners = {r.get("uid") for r in status["metadata"].get("ownerReferences") or []}
            if not owners & live_pods:
                present.append(f"SPCPS {status['metadata']['name']} without its pod")
        for secret in secrets:
            refs = secret["metadata"].get("ownerReferences") or []
            name = secret["metadata"]["name"]
            if not refs:
                present.append(f"Secret {name} without an owner")
            for ref in refs:
                if ref.get("uid") not in alive:
                    present.append(f"Secret {name} owned by gone {ref.get('kind')} {ref.get('name')}")
        now = self._history.now()
        intervals = self._all_intervals()

        def grace(since: float) -> float:
            return bounds.leftover_grace(intervals, since, now, self.base)

        for what, seen in self._lingering.observe(present, now, grace):
            if what not in self._reported:  # each once, when it first passes its grace
                self._reported.add(what)
                self._history.violation(3, what, seconds=round(seen, 1), grace=round(grace(now - seen), 1))
        return len(present)

    def _driver(self) -> None:
        """Invariant 4: one sample per round, a violation for each figure over its bound."""
        sample = procwatch.sample()
        if sample is None:
            return
        peak = self.tally.driver_peak
        for key, value in (("rss_mib", sample.rss_mib), ("fds", sample.fds), ("threads", sample.threads)):
            peak[key] = max(peak.get(key, 0.0), float(value))
        self._history.record(
            "driver", pid=sample.pid, rss_mib=round(sample.rss_mib, 1), fds=sample.fds, threads=sample.threads
        )
        for what in sample.over_limits():
            self._history.violation(4, what, pid=sample.pid)
