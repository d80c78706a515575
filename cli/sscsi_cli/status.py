"""`status`: the cluster view of the driver, per node, from the API and the driver's own metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from . import names, promtext
from .access import (
    CLUSTER_CSI_DRIVER,
    CSI_NODE,
    DAEMON_SET,
    DEPLOYMENT,
    NODE,
    POD,
    SPCPS,
    Cluster,
    Denied,
    Obj,
    fetch,
    fetch_list,
    fetch_text,
)
from .checks_node import check_operator
from .facts import Got, Many, driver_namespace, selector_of
from .objects import (
    container_image,
    is_driver_pod,
    is_true,
    node_label_mismatch,
    pod_ready,
    provider_label,
    provider_sockets,
    ref,
    untolerated_taints,
)
from .verdict import Link, Section, broken, denied, exit_code, ok, overall

Metrics = str | Denied | None


@dataclass
class ClusterFacts:
    cr: Got = None
    operator: Got = None
    daemonset: Got = None
    namespace: str = names.DRIVER_NAMESPACE
    nodes: Many = field(default_factory=list)
    csinodes: Many = field(default_factory=list)
    driver_pods: Many = field(default_factory=list)
    pods: Many = field(default_factory=list)
    spcps: Many = field(default_factory=list)
    # driver pod name -> its /metrics body
    metrics: dict[str, Metrics] = field(default_factory=dict)


async def gather_cluster(cluster: Cluster, *, driver_ns: str, daemonset_name: str) -> ClusterFacts:
    facts = ClusterFacts()
    facts.cr = await fetch(cluster.get(CLUSTER_CSI_DRIVER, names.DRIVER_NAME))
    facts.namespace = ns = driver_namespace(facts.cr, driver_ns)
    facts.daemonset = await fetch(cluster.get(DAEMON_SET, daemonset_name, ns))
    selector = selector_of(facts.daemonset, f"app={daemonset_name}")
    (
        facts.operator,
        facts.nodes,
        facts.csinodes,
        facts.driver_pods,
        facts.pods,
        facts.spcps,
    ) = await asyncio.gather(
        fetch(cluster.get(DEPLOYMENT, names.OPERATOR_DEPLOYMENT, ns)),
        fetch_list(cluster.list(NODE)),
        fetch_list(cluster.list(CSI_NODE)),
        fetch_list(cluster.list(POD, ns, labels=selector)),
        fetch_list(cluster.list(POD)),
        fetch_list(cluster.list(SPCPS)),
    )
    if isinstance(facts.driver_pods, list):
        running = [p for p in facts.driver_pods if (p.get("status") or {}).get("podIP")]
        bodies = await asyncio.gather(
            *(
                fetch_text(cluster.pod_proxy_get(ns, p["metadata"]["name"], _metrics_port(p), "metrics"))
                for p in running
            )
        )
        facts.metrics = {p["metadata"]["name"]: b for p, b in zip(running, bodies, strict=True)}
    return facts


def _metrics_port(pod: Obj) -> int:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for port in c.get("ports") or []:
            if port.get("name") == "metrics":
                return int(port["containerPort"])
    return names.METRICS_PORT


NODE_HEADER = [
    "NODE",
    "READY",
    "DRIVER",
    "REGISTERED",
    "PROVIDERS",
    "VOLUMES",
    "MOUNT-ERRORS",
    "ROTATION-FAILURES",
]


@dataclass
class NodeRow:
    name: str
    ready: bool
    eligible: bool
    driver: str = "none"
    version: str = ""
    registered: str = "no"
    providers: list[str] = field(default_factory=list)
    volumes: str = "?"
    mount_errors: str = "?"
    rotation_failures: str = "?"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def cells(self) -> list[str]:
        return [
            self.name,
            "yes" if self.ready else "no",
            f"{self.driver} {self.version}".strip() if self.eligible else "not placed here",
            self.registered,
            ", ".join(self.providers) or "none",
            self.volumes,
            self.mount_errors,
            self.rotation_failures,
        ]


@dataclass
class StatusReport:
    sections: list[Section]
    rows: list[NodeRow]

    @property
    def exit_code(self) -> int:
        return exit_code(link for s in self.sections for link in s.links)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": overall(self.exit_code),
            "exitCode": self.exit_code,
            "sections": [
                {"title": s.title, **s.details, "links": [link.to_json() for link in s.links]}
                for s in self.sections
            ],
            "nodes": [row.to_json() for row in self.rows],
        }


def judge(facts: ClusterFacts) -> StatusReport:
    control = Section("operator and driver (ClusterCSIDriver conditions, then links)")
    control.details["conditions"] = (
        list((facts.cr.get("status") or {}).get("conditions") or []) if isinstance(facts.cr, dict) else []
    )
    control.links += [check_operator(facts.cr), _operator_link(facts), _daemonset_link(facts)]
    rows = _rows(facts)
    nodes = Section("nodes")
    if isinstance(facts.nodes, Denied):
        nodes.links.append(denied("nodes", facts.nodes))
    else:
        ready = sum(r.ready for r in rows)
        placed = [r for r in rows if r.eligible]
        serving = sum(r.driver == "ready" and r.registered == "yes" for r in placed)
        nodes.title = (
            f"nodes: {ready}/{len(rows)} ready, the driver serving on {serving}/{len(placed)} it is placed on"
        )
        nodes.details.update(
            {"ready": ready, "total": len(rows), "driverServing": serving, "placed": len(placed)}
        )
        nodes.links += [_node_link(facts, row) for row in rows if row.eligible]
    for what, value in (
        ("CSINodes", facts.csinodes),
        ("pods (providers)", facts.pods),
        ("SPCPS", facts.spcps),
    ):
        if isinstance(value, Denied):
            nodes.links.append(denied(what, value))
    return StatusReport([control, nodes], rows)


def _operator_link(facts: ClusterFacts) -> Link:
    dep = facts.operator
    name = "operator Deployment"
    if isinstance(dep, Denied):
        return denied(name, dep)
    if dep is None:
        if facts.cr is None:
            return ok(name, "no operator Deployment and no ClusterCSIDriver", reason="NotManaged")
        return broken(name, "OperatorMissing", [f"no Deployment {names.OPERATOR_DEPLOYMENT}"], "reinstall it")
    st = dep.get("status") or {}
    want, have = int((dep.get("spec") or {}).get("replicas", 1)), int(st.get("readyReplicas") or 0)
    image = ((dep.get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or [{}])[0].get(
        "image"
    )
    text = f"Deployment {ref(dep)}: {have}/{want} ready, image {image}"
    if have < want:
        return broken(
            name, "OperatorNotReady", [text], f"kubectl describe deployment -n {facts.namespace} {ref(dep)}"
        )
    return ok(name, text)


def _daemonset_link(facts: ClusterFacts) -> Link:
    ds = facts.daemonset
    name = "driver DaemonSet"
    if isinstance(ds, Denied):
        return denied(name, ds)
    if ds is None:
        return broken(
            name,
            "DriverNotDeployed",
            [f"no DaemonSet {names.DAEMONSET} in {facts.namespace}"],
            "create or fix the ClusterCSIDriver (managementState Managed)",
        )
    st = ds.get("status") or {}
    want, have = int(st.get("desiredNumberScheduled") or 0), int(st.get("numberReady") or 0)
    text = f"DaemonSet {ref(ds)}: {have}/{want} pods ready, {st.get('updatedNumberScheduled', 0)} updated"
    if have < want:
        return broken(name, "DriverNotReady", [text], f"kubectl get pods -n {facts.namespace} -o wide")
    return ok(name, text)


def _rows(facts: ClusterFacts) -> list[NodeRow]:
    if isinstance(facts.nodes, Denied):
        return []
    template = ((facts.daemonset or {}) if isinstance(facts.daemonset, dict) else {}).get("spec", {})
    pod_spec = template.get("template", {}).get("spec") or {}
    rows = []
    for node in facts.nodes:
        name = node["metadata"]["name"]
        eligible = not node_label_mismatch(
            node, pod_spec.get("nodeSelector") or {}
        ) and not untolerated_taints(node, pod_spec.get("tolerations") or [])
        row = NodeRow(name, is_true(node, "Ready"), eligible)
        _fill_driver(row, facts)
        _fill_registration(row, facts)
        _fill_providers(row, facts)
        _fill_counts(row, facts)
        rows.append(row)
    return rows


def _on(pod: Obj, node: str) -> bool:
    return (pod.get("spec") or {}).get("nodeName") == node


def _fill_driver(row: NodeRow, facts: ClusterFacts) -> None:
    if isinstance(facts.driver_pods, Denied):
        row.driver = "unknown"
        return
    for pod in facts.driver_pods:
        if _on(pod, row.name):
            row.driver = "ready" if pod_ready(pod) else "not ready"
            image = container_image(pod, names.DRIVER_CONTAINER)
            row.version = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else image
            metrics = facts.metrics.get(pod["metadata"]["name"])
            if isinstance(metrics, str):
                samples = promtext.parse(metrics)
                row.mount_errors = f"{promtext.total(samples, 'node_publish_error_total'):.0f}"
                row.rotation_failures = f"{promtext.total(samples, 'rotation_reconcile_error_total'):.0f}"
            elif isinstance(metrics, Denied):
                row.mount_errors = row.rotation_failures = "forbidden"


def _fill_registration(row: NodeRow, facts: ClusterFacts) -> None:
    if isinstance(facts.csinodes, Denied):
        row.registered = "unknown"
        return
    for csinode in facts.csinodes:
        if csinode["metadata"]["name"] == row.name:
            drivers = (csinode.get("spec") or {}).get("drivers") or []
            row.registered = "yes" if any(d.get("name") == names.DRIVER_NAME for d in drivers) else "no"


def _fill_providers(row: NodeRow, facts: ClusterFacts) -> None:
    if isinstance(facts.pods, Denied):
        row.providers = ["unknown"]
        return
    found: set[str] = set()
    for pod in facts.pods:
        if _on(pod, row.name) and not is_driver_pod(pod):
            mark = "" if pod_ready(pod) else " (not ready)"
            found.update(f"{provider_label(p)}{mark}" for p in provider_sockets(pod))
    row.providers = sorted(found)


def _fill_counts(row: NodeRow, facts: ClusterFacts) -> None:
    if isinstance(facts.spcps, Denied):
        return
    mounted = [
        s
        for s in facts.spcps
        if ((s.get("metadata") or {}).get("labels") or {}).get(names.NODE_LABEL) == row.name
        and (s.get("status") or {}).get("mounted")
    ]
    row.volumes = str(len(mounted))


def _node_link(facts: ClusterFacts, row: NodeRow) -> Link:
    name = f"node {row.name}"
    evidence = [
        f"driver {row.driver} {row.version}".rstrip() + f", registered: {row.registered}",
        f"providers: {', '.join(row.providers) or 'none'}",
        f"volumes mounted: {row.volumes}, mount errors: {row.mount_errors}, "
        f"rotation failures: {row.rotation_failures} (counters since the driver started)",
    ]
    if not row.ready:
        return ok(name, "the node is not Ready: its driver is not judged", *evidence, reason="NodeNotReady")
    if row.driver == "unknown":
        return denied(name, facts.driver_pods if isinstance(facts.driver_pods, Denied) else Denied("?"))
    if row.driver != "ready" or row.registered == "no":
        return broken(
            name, "DriverNotServing", evidence, f"kubectl secrets-store doctor <a pod on {row.name}>"
        )
    return ok(name, *evidence)
