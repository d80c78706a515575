"""One chaos run on an installed node: load, the seeded faults, the checks, convergence, the report.

Phases (each recorded in the history as `phase`):
  warm-up    pods churn, checks run, no fault yet
  faults     the schedule (schedule.plan) runs over `duration` seconds, overlapping, under the load
  converge   faults healed, churn stopped: until one check round finds everything converged
             (invariant 6: within bounds.CONVERGENCE_SECONDS, asserted)
  cleanup    every pod of the run deleted: its tmpfs, SPCPS and synced Secrets must go (invariant 3)
Then the log scan's tokens are matched against every digest the run's pods could have been served
(invariant 5), and the summary line, history.json and timeline.png are written.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from node.nodekit import CLUSTER_DIR, REPO, Kube

from . import bounds, schedule, stamps
from .checker import Checker
from .faultrunner import FaultRunner
from .faults import ChaosNode, Fault, node_faults
from .history import History
from .load import STAMP_PERIOD_SECONDS, Churn, Registry, spc_specs
from .logscan import LogScan
from .report import Summary, timeline

RESULTS = REPO / "chaos-results"
HEALTHY_WITHIN = 120.0  # seconds the warm-up may take beyond its length to see pods Ready


@dataclass(frozen=True)
class Settings:
    seed: int
    duration: float  # seconds of faults
    every_kind: bool = False  # the short version: every kind this machine can produce, at least once
    warmup: float = 20.0
    mean_gap: float = 20.0  # seconds between fault starts, on average
    pool: int = 8  # pods kept running
    create_every: float = 3.0  # a new pod about this often
    check_every: float = 3.0
    rotation_seconds: float = 5.0  # the ClusterCSIDriver's minimumRefreshAge (driver poll interval)


@dataclass(frozen=True)
class Outcome:
    summary: Summary
    results: Path
    violations: list[str]
    usable: list[str]  # the fault kinds this machine could produce (the others were skipped)


def probe_faults(faults: list[Fault], history: History) -> dict[str, Fault]:
    usable: dict[str, Fault] = {}
    for fault in faults:
        reason = fault.probe()
        if reason is None:
            usable[fault.kind] = fault
        else:
            print(f"chaos: skipping {fault.kind}: {reason}", flush=True)
            history.record("fault-skipped", fault=fault.kind, reason=reason)
    return usable


def _phase(history: History, name: str) -> None:
    history.record("phase", phase=name)
    print(f"chaos: [{history.now():6.1f}s] {name}", flush=True)


def _wait_ready_pods(registry: Registry, count: int, within: float) -> bool:
    """At least `count` pods of the run have been Ready (the checker records it), waiting up to `within`."""
    deadline = time.monotonic() + within
    while sum(p.ready is not None for p in registry.snapshot()) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def _wait_converged(checker: Checker, limit: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if checker.round():
            return time.monotonic() - started
        time.sleep(2.0)
    return None


def run(settings: Settings, kubeconfig: Path, out: Path | None = None) -> Outcome:
    rng = random.Random(settings.seed)
    history = History()
    wall_zero = time.time()
    namespace = f"chaos-{settings.seed}-{secrets.token_hex(3)}"
    registry = Registry(namespace, spc_specs())
    churn = Churn(Kube(kubeconfig), registry, history, rng, settings.pool, settings.create_every)
    faults = probe_faults(node_faults(ChaosNode(Kube(kubeconfig))), history)
    runner = FaultRunner(faults, history)
    checker = Checker(Kube(kubeconfig), registry, history, runner.intervals, settings.rotation_seconds)
    scan = LogScan(CLUSTER_DIR / "logs")
    planned = schedule.plan(
        rng,
        {k: f.max_seconds for k, f in faults.items()},
        settings.duration,
        settings.mean_gap,
        settings.every_kind,
    )
    history.record("schedule", seed=settings.seed, planned=[asdict(p) for p in planned])
    print(
        f"chaos: seed={settings.seed} namespace={namespace} schedule {schedule.kinds_count(planned)}",
        flush=True,
    )

    scan.mark_start()
    churn.setup()
    _phase(history, "warm-up")
    churn.start()
    checker.start(settings.check_every)
    scan.start(5.0)
    time.sleep(settings.warmup)
    healthy = _wait_ready_pods(registry, min(3, settings.pool), HEALTHY_WITHIN)
    if not healthy:  # faults on a node that does not run pods would prove nothing
        history.violation(
            6, f"fewer than 3 pods Ready {settings.warmup + HEALTHY_WITHIN:.0f}s into the warm-up"
        )
        planned = []

    _phase(history, "faults")
    runner.start(planned)
    time.sleep(settings.duration if planned else 0.0)
    runner.stop()
    churn.stop()
    faults_end = history.now()
    _phase(history, "converge")
    checker.stop()  # the convergence rounds run here, one after another
    converged = _wait_converged(checker, bounds.CONVERGENCE_SECONDS)
    if converged is None:
        history.violation(6, f"not converged {bounds.CONVERGENCE_SECONDS:.0f}s after the faults stopped")
    else:
        history.record("converged", seconds=round(converged, 1), at=round(faults_end + converged, 1))

    _phase(history, "cleanup")
    churn.delete_all()
    if _wait_converged(checker, bounds.LEFTOVER_GRACE_SECONDS + 60.0) is None:
        history.violation(3, "the run's pods, tmpfs, SPCPS or Secrets still there after deleting every pod")
    scan.stop()
    _check_logs(scan, registry, history, wall_zero)
    Kube(kubeconfig).run("delete", "namespace", namespace, "--wait=false", check=False)
    _phase(history, "done")

    summary = Summary(
        seed=settings.seed,
        faults=dict(sorted(runner.injected.items())),
        pods=churn.created,
        minutes=faults_end / 60.0,
        rotations=checker.tally.rotations,
        violations=len(history.violations()),
        bytes_lost=checker.tally.bytes_lost,
        converged_s=converged,
    )
    results = out or RESULTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results.mkdir(parents=True, exist_ok=True)
    detail = summary.as_json() | {
        "namespace": namespace,
        "settings": asdict(settings),
        "volumes_checked": checker.tally.volumes_checked,
        "check_rounds": checker.tally.rounds,
        "check_rounds_skipped": checker.tally.skipped,
        "driver_peak": checker.tally.driver_peak,
        "digests_observed": len(checker.tally.digests),
        "log_bytes_scanned": scan.bytes_scanned,
        "bounds": {
            "base_staleness_s": checker.base,
            "leftover_grace_s": bounds.LEFTOVER_GRACE_SECONDS,
            "convergence_s": bounds.CONVERGENCE_SECONDS,
            "rss_limit_mib": bounds.RSS_LIMIT_MIB,
            "fds_limit": bounds.FDS_LIMIT,
            "threads_limit": bounds.THREADS_LIMIT,
        },
    }
    history.write(results / "history.json", detail)
    drawn = [*runner.intervals(), *checker.clock_steps]
    why_not = timeline(history, drawn, results / "timeline.png", f"chaos seed={settings.seed}")
    if why_not:
        print(f"chaos: no timeline.png: {why_not}")
    violations = [f"[{v.t:.1f}s] invariant {v.detail['invariant']}: {v.detail}" for v in history.violations()]
    return Outcome(summary, results, violations, sorted(faults))


def _check_logs(scan: LogScan, registry: Registry, history: History, wall_zero: float) -> None:
    """Invariant 5 over every digest any pod of the run could have been served."""
    end = wall_zero + history.now()
    possible: list[tuple[str, str]] = []
    for pod in registry.snapshot():
        first = stamps.version_at(wall_zero + pod.created - 5.0, STAMP_PERIOD_SECONDS)
        last = stamps.version_at((wall_zero + pod.gone) if pod.gone else end, STAMP_PERIOD_SECONDS) + 1
        for _, spc_name in pod.volumes:
            spec = registry.specs[spc_name]
            possible += stamps.possible_digests(
                spec.salt, registry.namespace, pod.name, spec.objects, first, last
            )
    leaks = scan.leaks(possible)
    history.record("log-scan", digests_possible=len(possible), tokens=len(scan.tokens), leaks=len(leaks))
    for what, digest, where in leaks[:20]:
        history.violation(5, "a stamp digest in a log", stamp=what, digest=digest, file=where)
