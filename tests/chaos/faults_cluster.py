"""A ClusterCSIDriver edit that rolls the driver's DaemonSet: `spec.logLevel` changed (the driver's and
sidecars' -v in the pod template), then set back at heal (a second rollout).

Both edits go through the apiserver, which another fault may have down: each is retried until it lands
or its deadline passes. The fault lasts until the DaemonSet has rolled out the restored template, not
only until the edit landed: after apiserver restarts the DaemonSet controller may take a minute to
replace the driver pod, and volumes are not refreshed while no driver runs (chaos seed 20 counted such
a late rollout as fault-free time).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.nodekit import KubectlError
from sscsi_operator.spec import LogLevel

from .faults import ChaosNode, FaultError

INJECT_SECONDS = 45.0  # an apiserver or etcd restart under way is waited out
HEAL_SECONDS = 120.0
ROLLOUT_SECONDS = 240.0
KIND = "clustercsidriver"


@dataclass
class ClusterCsiDriverEdit:
    ctx: ChaosNode
    max_seconds: float = 60.0
    kind: str = "ccd-edit-rollout"
    _original: str | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def probe(self) -> str | None:
        try:
            self.ctx.kube.get(KIND, self.ctx.cluster_csi_driver)
        except KubectlError as err:
            return f"no ClusterCSIDriver {self.ctx.cluster_csi_driver} to edit: {err}"
        return None

    def inject(self) -> None:
        with self._lock:
            current = self._retry(self._log_level, INJECT_SECONDS)
            other = "Normal" if current != "Normal" else "Debug"
            self._retry(lambda: self._set_log_level(other), INJECT_SECONDS)
            if self._original is None:
                self._original = current
            # The operator has rendered the edit: heal's rollout wait then cannot mistake the untouched
            # template for the restored one (seed 20: it did, and both rollouts ran after the faults).
            self._wait_for(other, ROLLOUT_SECONDS, rolled_out=False)

    def heal(self) -> None:
        with self._lock:
            if self._original is None:
                return
            original = self._original
            self._retry(lambda: self._set_log_level(original), HEAL_SECONDS)
            self._original = None
            self._wait_for(original, ROLLOUT_SECONDS, rolled_out=True)

    def _wait_for(self, level: str, seconds: float, rolled_out: bool) -> None:
        """Until the driver DaemonSet's template carries `level`'s -v and, with `rolled_out`, every node
        it schedules to runs it."""
        flag = f"-v={LogLevel(level).verbosity}"
        deadline = time.monotonic() + seconds
        state = "not read yet"
        while time.monotonic() < deadline:
            try:
                ds = self.ctx.kube.get("daemonset", self.ctx.driver_app, self.ctx.driver_namespace)
                state = rollout_state(ds, flag)
            except (KubectlError, OSError, subprocess.TimeoutExpired) as err:
                state = f"unreadable: {err}"
            if state == "done" or (not rolled_out and state.startswith(("updated", "controller"))):
                return
            time.sleep(1.0)
        raise FaultError(f"driver DaemonSet not at {flag} in {seconds:.0f}s: {state}")

    def _log_level(self) -> str:
        cr = self.ctx.kube.get(KIND, self.ctx.cluster_csi_driver)
        return str(cr.get("spec", {}).get("logLevel") or "Normal")

    def _set_log_level(self, level: str) -> str:
        patch = json.dumps({"spec": {"logLevel": level}})
        self.ctx.kube.run("patch", KIND, self.ctx.cluster_csi_driver, "--type=merge", "-p", patch, timeout=20)
        return level

    @staticmethod
    def _retry(call: Callable[[], str], seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while True:
            try:
                return call()
            except (KubectlError, OSError, subprocess.TimeoutExpired) as err:
                if time.monotonic() >= deadline:
                    raise FaultError(
                        f"ClusterCSIDriver edit did not go through in {seconds:.0f}s: {err}"
                    ) from err
            time.sleep(1.0)


def rollout_state(ds: dict[str, Any], flag: str) -> str:
    """ "done" when the DaemonSet's current template carries `flag` and every scheduled pod is updated
    and available; else what is missing."""
    containers = ds["spec"]["template"]["spec"]["containers"]
    driver = next((c for c in containers if c["name"] == "csi-driver"), None)
    if driver is None or flag not in driver.get("args", []):
        return f"template without {flag} yet"
    status = ds.get("status") or {}
    if status.get("observedGeneration", 0) < ds["metadata"].get("generation", 0):
        return "controller has not seen the template yet"
    desired = status.get("desiredNumberScheduled", 0)
    updated = status.get("updatedNumberScheduled", 0)
    available = status.get("numberAvailable", 0)
    if desired and updated == desired and available == desired:
        return "done"
    return f"updated {updated}/{desired}, available {available}/{desired}"
