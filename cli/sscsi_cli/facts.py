"""Gather what `doctor` judges: the pod, its node's driver and providers, and each volume's objects.

Every read goes through `Cluster` as the user; a read RBAC refuses becomes a `Denied` value, so
the links that needed it say so instead of failing the whole run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from . import names
from .access import (
    CLUSTER_CSI_DRIVER,
    CSI_DRIVER,
    CSI_NODE,
    DAEMON_SET,
    EVENT,
    NODE,
    POD,
    SECRET,
    SPC,
    SPCPS,
    Cluster,
    Denied,
    Obj,
    fetch,
    fetch_list,
)

Got = Obj | None | Denied
Many = list[Obj] | Denied


@dataclass
class VolumeFacts:
    name: str
    spc_name: str
    spc: Got = None
    spcps: Got = None
    # secretObjects[].secretName -> the Secret (only its metadata and data keys are used)
    secrets: dict[str, Got] = field(default_factory=dict)


@dataclass
class PodFacts:
    pod: Obj
    cr: Got = None
    csidriver: Got = None
    driver_namespace: str = names.DRIVER_NAMESPACE
    daemonset: Got = None
    driver_pods: Many = field(default_factory=list)
    node: Got = None
    csinode: Got = None
    node_pods: Many = field(default_factory=list)
    events: Many = field(default_factory=list)
    volumes: list[VolumeFacts] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def pod_name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def node_name(self) -> str:
        return str((self.pod.get("spec") or {}).get("nodeName") or "")


def secrets_store_volumes(pod: Obj) -> list[tuple[str, str]]:
    """(volume name, secretProviderClass attribute) of each inline volume of this driver."""
    out = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        csi = volume.get("csi") or {}
        if csi.get("driver") == names.DRIVER_NAME:
            attributes = csi.get("volumeAttributes") or {}
            out.append((str(volume["name"]), str(attributes.get("secretProviderClass") or "")))
    return out


def driver_namespace(cr: Got, default: str) -> str:
    """Where the operator put the DaemonSet (its status says), else the default."""
    if isinstance(cr, dict):
        for generation in (cr.get("status") or {}).get("generations") or []:
            if generation.get("resource") == "daemonsets" and generation.get("namespace"):
                return str(generation["namespace"])
    return default


def selector_of(daemonset: Got, fallback: str) -> str:
    if isinstance(daemonset, dict):
        labels = ((daemonset.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if labels:
            return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return fallback


async def gather_pod(cluster: Cluster, pod: Obj, *, driver_ns: str, daemonset_name: str) -> PodFacts:
    facts = PodFacts(pod)
    facts.cr = await fetch(cluster.get(CLUSTER_CSI_DRIVER, names.DRIVER_NAME))
    facts.driver_namespace = driver_namespace(facts.cr, driver_ns)
    facts.daemonset = await fetch(cluster.get(DAEMON_SET, daemonset_name, facts.driver_namespace))
    node = facts.node_name
    on_node = f"spec.nodeName={node}"
    selector = selector_of(facts.daemonset, f"app={daemonset_name}")
    uid = facts.pod["metadata"].get("uid", "")
    event_fields = f"involvedObject.name={facts.pod_name},involvedObject.kind=Pod"
    if uid:
        event_fields += f",involvedObject.uid={uid}"
    (
        facts.csidriver,
        facts.events,
        facts.volumes,
    ) = await asyncio.gather(
        fetch(cluster.get(CSI_DRIVER, names.DRIVER_NAME)),
        fetch_list(cluster.list(EVENT, facts.namespace, fields=event_fields)),
        _gather_volumes(cluster, facts),
    )
    if node:
        facts.driver_pods, facts.node, facts.csinode, facts.node_pods = await asyncio.gather(
            fetch_list(cluster.list(POD, facts.driver_namespace, labels=selector, fields=on_node)),
            fetch(cluster.get(NODE, node)),
            fetch(cluster.get(CSI_NODE, node)),
            fetch_list(cluster.list(POD, None, fields=on_node)),
        )
    return facts


async def _gather_volumes(cluster: Cluster, facts: PodFacts) -> list[VolumeFacts]:
    return list(
        await asyncio.gather(
            *(
                _gather_volume(cluster, facts.namespace, facts.pod_name, name, spc)
                for name, spc in secrets_store_volumes(facts.pod)
            )
        )
    )


async def _gather_volume(cluster: Cluster, namespace: str, pod: str, name: str, spc_name: str) -> VolumeFacts:
    volume = VolumeFacts(name, spc_name)
    if not spc_name:
        return volume
    volume.spc, volume.spcps = await asyncio.gather(
        fetch(cluster.get(SPC, spc_name, namespace)),
        fetch(cluster.get(SPCPS, names.spcps_name(pod, namespace, spc_name), namespace)),
    )
    if isinstance(volume.spc, dict):
        wanted = [
            str(obj.get("secretName") or "")
            for obj in (volume.spc.get("spec") or {}).get("secretObjects") or []
            if obj.get("secretName")
        ]
        got = await asyncio.gather(*(fetch(cluster.get(SECRET, s, namespace)) for s in wanted))
        volume.secrets = {s: _without_values(g) for s, g in zip(wanted, got, strict=True)}
    return volume


def _without_values(secret: Got) -> Got:
    """Keep a Secret's keys, never its values (nothing downstream may print them)."""
    if not isinstance(secret, dict):
        return secret
    kept: dict[str, Any] = {k: v for k, v in secret.items() if k not in ("data", "stringData")}
    kept["data"] = dict.fromkeys((secret.get("data") or {}), "")
    return kept
