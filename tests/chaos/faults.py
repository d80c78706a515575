"""The faults a chaos run injects on the real node, behind one small protocol.

The runner (tests/chaos) only sees `Fault`: `probe()` says whether this machine can produce it (None) or
why not (the reason is printed and the kind skipped), `inject()` starts it and returns within seconds,
`heal()` ends it (idempotent; a no-op for one-shot kills, which heal themselves through kubelet or the
Deployment). `max_seconds` is the longest a fault stays active once injected: the runner heals it by then
at the latest and adds it to its bounds. inject/heal are called from worker threads; faults of different
kinds may overlap, at most one per kind is active.

`node_faults(ChaosNode(kube))` lists one fault of every kind, in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from node.nodekit import CLUSTER_DIR, DRIVER_NAME, Kube

KINDS = (
    "driver-kill",
    "provider-kill",
    "provider-hang",
    "provider-slow",
    "provider-garbage",
    "apiserver-restart",
    "etcd-restart",
    "kubelet-restart",
    "containerd-restart",
    "operator-kill",
    "ccd-edit-rollout",
    "disk-full",
    "driver-memory-pressure",
)


class Fault(Protocol):
    kind: str
    max_seconds: float

    def probe(self) -> str | None:
        """None when this machine can produce the fault; else the reason it is skipped."""
        ...

    def inject(self) -> None:
        """Start the fault; returns within a few seconds (blocking, thread-safe)."""
        ...

    def heal(self) -> None:
        """End the fault (idempotent; a no-op for one-shot kills)."""
        ...


@dataclass
class ChaosNode:
    """What the faults need: the node's cluster, its directory, and where the pieces run."""

    kube: Kube
    cluster_dir: Path = CLUSTER_DIR
    provider_namespace: str = "kube-system"
    provider_app: str = "csi-secrets-store-e2e-provider"
    driver_namespace: str = "secrets-store-csi-driver"
    driver_app: str = "secrets-store-csi-driver-node"
    operator_deployment: str = "secrets-store-csi-operator"
    cluster_csi_driver: str = DRIVER_NAME

    def provider_control(self, path: str) -> str:
        """GET the reference provider's HTTP control endpoint (e.g. ``/fault?mode=none``); its body."""
        raise NotImplementedError


def node_faults(ctx: ChaosNode) -> list[Fault]:
    """One fault of every kind in KINDS, in that order."""
    raise NotImplementedError
