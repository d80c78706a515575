"""Application pods that use the driver, which removal waits for.

Kubelet needs the driver to unmount a secrets-store volume: a pod that still has one when the driver
goes keeps its (no longer rotated) files and, once deleted, stays Terminating until the driver is
back. So removal waits while such pods exist, unless the ClusterCSIDriver carries the force-removal
annotation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sscsi_kube import KubeClient

from .kinds import POD
from .names import DRIVER_NAME, FORCE_REMOVAL_ANNOTATION

# Pods that have finished have had their volumes torn down (or will without the driver's help).
ACTIVE_PODS_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
TERMINAL_PHASES = ("Succeeded", "Failed")
# How many pods a condition or Event names; the rest are counted.
MAX_NAMED = 10


@dataclass(frozen=True)
class DriverUsers:
    """The pods (namespace/name, sorted) that still have a volume of the driver."""

    pods: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.pods)

    def named(self, limit: int = MAX_NAMED) -> str:
        shown = ", ".join(self.pods[:limit])
        hidden = len(self.pods) - limit
        return f"{shown} and {hidden} more" if hidden > 0 else shown

    def _counted(self) -> str:
        count = len(self.pods)
        return f"{count} pod{'' if count == 1 else 's'}"

    def waiting_message(self) -> str:
        return (
            f"removal waits for {self._counted()} using the driver: {self.named()}. Stop them, or "
            f'annotate the ClusterCSIDriver {FORCE_REMOVAL_ANNOTATION}="true" to remove the driver anyway'
        )

    def forced_message(self) -> str:
        return (
            f"removal forced by {FORCE_REMOVAL_ANNOTATION} while {self._counted()} still use the driver "
            f"(their volumes cannot be unmounted until the driver is back): {self.named()}"
        )


def uses_driver(pod: Mapping[str, Any]) -> bool:
    """Whether a pod that has not finished has an inline volume of the driver."""
    if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return False
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return any((volume.get("csi") or {}).get("driver") == DRIVER_NAME for volume in volumes)


def driver_users(pods: Iterable[Mapping[str, Any]]) -> DriverUsers:
    names = {
        f"{pod['metadata'].get('namespace', '')}/{pod['metadata']['name']}"
        for pod in pods
        if uses_driver(pod)
    }
    return DriverUsers(tuple(sorted(names)))


async def find_driver_users(client: KubeClient) -> DriverUsers:
    """Every pod in the cluster that still uses the driver (one paged list of the unfinished pods)."""
    return driver_users((await client.list_all(POD, None, fields=ACTIVE_PODS_SELECTOR)).items)


def removal_forced(body: Mapping[str, Any]) -> bool:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(FORCE_REMOVAL_ANNOTATION, "")).strip().lower() == "true"
