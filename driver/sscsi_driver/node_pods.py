"""The pods bound to this node, watched from the start: one watch filtered by `spec.nodeName`.

Two readers share it:
- the SecretProviderClass caches: a pod with one of our volumes that lands on the node starts its
  namespace's SPC watch at once, while kubelet is still setting the pod up, so the pod's first
  publish reads a warm cache instead of waiting for a watch to start (TLS connection, initial
  events: tens of milliseconds on a node starting many pods);
- secret sync: a pod's owners and phase.

Only what they read is kept of each pod (`slim_pod`), so memory follows the node's pods, not their size.
"""

from __future__ import annotations

from typing import Any

from sscsi_kube import Informer, KubeClient, NamespacedCache, Obj
from sscsi_kube.resources import POD

POD_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp", "ownerReferences")


def node_pods(api: KubeClient, node: str, driver_name: str, spcs: NamespacedCache) -> Informer:
    """The node's pod cache (not started); a pod about to mount one of our volumes warms `spcs`."""
    informer = Informer(
        api, POD, fields={"spec.nodeName": node}, transform=lambda pod: slim_pod(pod, driver_name)
    )

    def on_pod(kind: str, pod: Obj) -> None:
        if kind != "DELETED" and will_mount(pod):
            spcs.warm(str(pod["metadata"].get("namespace") or ""))

    informer.add_listener(on_pod)
    return informer


def slim_pod(pod: Obj, driver_name: str) -> Obj:
    """The pod's identity, owners, deletion mark, phase and its volumes of `driver_name`."""
    meta = pod.get("metadata") or {}
    volumes = (pod.get("spec") or {}).get("volumes") or []
    ours = [v for v in volumes if isinstance(v, dict) and _csi_driver(v) == driver_name]
    return {
        "metadata": {k: meta[k] for k in POD_KEPT_METADATA if k in meta},
        "spec": {"volumes": ours},
        "status": {"phase": (pod.get("status") or {}).get("phase", "")},
    }


def will_mount(pod: Obj) -> bool:
    """A pod not yet started (kubelet mounts volumes before the containers run) with one of our volumes."""
    if pod["metadata"].get("deletionTimestamp") or pod["status"]["phase"] not in ("", "Pending"):
        return False
    return bool(pod["spec"]["volumes"])


def _csi_driver(volume: dict[str, Any]) -> str:
    csi = volume.get("csi")
    return str(csi.get("driver") or "") if isinstance(csi, dict) else ""
