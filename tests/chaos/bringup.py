"""The node as the real-node tier sets it up (tests/node/conftest.py), for `python -m chaos`.

probe -> hack/node-up.sh -> hack/images.sh import -> both providers, the operator from
dist/install.yaml, a ClusterCSIDriver (rotation on, minimumRefreshAge nodesetup.ROTATION_SECONDS, sync
on) with the driver registered. Idempotent and quick when the node already runs it. One session at a
time: the tier's lock (/run/sscsi-node-tier.lock) is held until the process exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

# tests/node's modules import each other by their plain names (pytest puts tests/node on the path).
sys.path.append(str(Path(__file__).resolve().parents[1] / "node"))

from node.nodekit import CLUSTER_DIR, HACK, Kube
from node.nodesetup import install_driver, install_operator, install_providers, save_logs

TIER_LOCK = "/run/sscsi-node-tier.lock"


class NodeUnavailable(Exception):
    """This machine cannot run the real node (the probe's reason)."""


def tier_lock(wait: float = 1800.0) -> IO[str]:
    """The real-node tier's lock, held while the returned file stays open."""
    lock = open(TIER_LOCK, "w")  # noqa: SIM115 (held for the process's life)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"another real-node session held {TIER_LOCK} for {wait:.0f}s") from None
            time.sleep(2)


def _run(cmd: list[str], what: str, timeout: float) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return done.stdout


def bring_up() -> Path:
    """The node running with the driver installed; returns the admin kubeconfig."""
    os.environ["SSCSI_NODE_CLUSTER_DIR"] = str(CLUSTER_DIR)
    probe = subprocess.run([str(HACK / "node-probe.sh")], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise NodeUnavailable("; ".join(probe.stdout.split("\n")).strip("; "))
    kubeconfig = Path(_run([str(HACK / "node-up.sh")], "hack/node-up.sh", 900).strip().splitlines()[-1])
    images = json.loads(_run([str(HACK / "images.sh"), "import"], "hack/images.sh import", 1800))
    kube = Kube(kubeconfig)
    install_providers(kube, images)
    install_operator(kube, images)  # this build's, whatever an earlier session left (as the tier does)
    install_driver(kube)
    return kubeconfig


def save_pod_logs(kubeconfig: Path) -> None:
    save_logs(Kube(kubeconfig))
