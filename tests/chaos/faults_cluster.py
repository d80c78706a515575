"""A ClusterCSIDriver edit that rolls the driver's DaemonSet: `spec.logLevel` changed (the driver's and
sidecars' -v in the pod template), then set back at heal (a second rollout).

Both edits go through the apiserver, which another fault may have down: each is retried until it lands
or its deadline passes.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from node.nodekit import KubectlError

from .faults import ChaosNode, FaultError

INJECT_SECONDS = 45.0  # an apiserver or etcd restart under way is waited out
HEAL_SECONDS = 120.0
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

    def heal(self) -> None:
        with self._lock:
            if self._original is None:
                return
            original = self._original
            self._retry(lambda: self._set_log_level(original), HEAL_SECONDS)
            self._original = None

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
