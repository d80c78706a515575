"""The links every volume of the pod shares: the operator's CR, the CSIDriver, the driver on the node."""

from __future__ import annotations

from . import names
from .access import Denied
from .facts import Got, PodFacts
from .objects import (
    condition,
    container_image,
    container_problems,
    node_label_mismatch,
    pod_ready,
    ref,
    untolerated_taints,
)
from .verdict import Link, broken, denied, ok

OPERATOR = "ClusterCSIDriver"
CSIDRIVER = "CSIDriver"
DRIVER_POD = "driver on the node"
CSINODE = "CSINode registration"

MANAGED_PATCH = (
    f"kubectl patch clustercsidriver {names.DRIVER_NAME} --type=merge "
    """-p '{"spec":{"managementState":"Managed"}}'"""
)


def management_state(cr: Got) -> str:
    return str(((cr.get("spec") or {}) if isinstance(cr, dict) else {}).get("managementState") or "")


def check_operator(cr: Got) -> Link:
    if isinstance(cr, Denied):
        return denied(OPERATOR, cr)
    if cr is None:
        return ok(
            OPERATOR, "no ClusterCSIDriver: the driver is not managed by the operator", reason="NotManaged"
        )
    state = management_state(cr)
    if state == "Removed":
        return broken(
            OPERATOR,
            "ManagementStateRemoved",
            [f"ClusterCSIDriver {names.DRIVER_NAME} has spec.managementState Removed: the driver is removed"],
            MANAGED_PATCH,
        )
    seen = [f"managementState {state or 'Managed'}"]
    degraded, available = condition(cr, "Degraded"), condition(cr, "Available")
    for cond in (available, degraded):
        if cond is not None:
            seen.append(f"{cond.get('type')}={cond.get('status')} ({cond.get('reason', '')})")
    if state == "Unmanaged":
        return ok(OPERATOR, "; ".join(seen), "the operator leaves the driver as it is", reason="Unmanaged")
    if degraded is not None and degraded.get("status") == "True":
        return broken(
            OPERATOR,
            "OperatorDegraded",
            [f"Degraded: {degraded.get('reason', '')}: {degraded.get('message', '')}"],
            "see the operator's log: kubectl logs -n "
            f"{names.DRIVER_NAMESPACE} deployment/{names.OPERATOR_DEPLOYMENT}",
        )
    if available is not None and available.get("status") == "False":
        return broken(
            OPERATOR,
            "DriverUnavailable",
            [f"Available=False: {available.get('reason', '')}: {available.get('message', '')}"],
            "the driver links below say where it is missing",
        )
    return ok(OPERATOR, "; ".join(seen))


def check_csidriver(csidriver: Got, cr: Got) -> Link:
    if isinstance(csidriver, Denied):
        return denied(CSIDRIVER, csidriver)
    if csidriver is None:
        if management_state(cr) == "Removed":
            fix = MANAGED_PATCH
        elif cr is None:
            fix = (
                f"create a ClusterCSIDriver named {names.DRIVER_NAME} (the operator then installs the driver)"
            )
        else:
            fix = "the operator creates it: check the ClusterCSIDriver's conditions and the operator's log"
        return broken(CSIDRIVER, "CSIDriverMissing", [f"no CSIDriver {names.DRIVER_NAME}"], fix)
    spec = csidriver.get("spec") or {}
    wrong = []
    if spec.get("attachRequired") is not False:
        wrong.append(f"attachRequired is {spec.get('attachRequired')}, want false")
    if spec.get("podInfoOnMount") is not True:
        wrong.append(f"podInfoOnMount is {spec.get('podInfoOnMount')}, want true")
    if "Ephemeral" not in (spec.get("volumeLifecycleModes") or []):
        wrong.append(
            f"volumeLifecycleModes is {spec.get('volumeLifecycleModes')}, want it to include Ephemeral"
        )
    if wrong:
        return broken(
            CSIDRIVER,
            "CSIDriverMisshaped",
            wrong,
            f"kubectl delete csidriver {names.DRIVER_NAME} (the operator recreates it as rendered)",
        )
    return ok(
        CSIDRIVER,
        f"CSIDriver {names.DRIVER_NAME}: attachRequired=false, podInfoOnMount=true, Ephemeral, "
        f"requiresRepublish={str(bool(spec.get('requiresRepublish'))).lower()} (rotation)",
    )


def check_driver_pod(facts: PodFacts) -> Link:
    node = facts.node_name
    pods = facts.driver_pods
    if isinstance(pods, Denied):
        return denied(DRIVER_POD, pods)
    mine = [p for p in pods if (p.get("spec") or {}).get("nodeName") == node]
    if not mine:
        return broken(DRIVER_POD, "DriverNotOnNode", *_why_no_driver_pod(facts))
    pod = mine[0]
    image = container_image(pod, names.DRIVER_CONTAINER)
    if not pod_ready(pod):
        problems = container_problems(pod)
        return broken(
            DRIVER_POD,
            "DriverNotReady",
            [f"driver pod {ref(pod)} on node {node} is not ready: " + "; ".join(problems), f"image {image}"],
            f"kubectl describe pod -n {facts.driver_namespace} {pod['metadata']['name']}; kubectl logs -n "
            f"{facts.driver_namespace} {pod['metadata']['name']} -c {names.DRIVER_CONTAINER}",
        )
    return ok(DRIVER_POD, f"driver pod {ref(pod)} ready on node {node}, image {image}")


def _why_no_driver_pod(facts: PodFacts) -> tuple[list[str], str]:
    node = facts.node_name
    evidence = [f"no driver pod on node {node} in namespace {facts.driver_namespace}"]
    ds = facts.daemonset
    if management_state(facts.cr) == "Removed":
        evidence.append(f"ClusterCSIDriver {names.DRIVER_NAME} has managementState Removed")
        return evidence, MANAGED_PATCH
    if isinstance(ds, Denied):
        evidence.append(f"could not read the DaemonSet: {ds}")
        return evidence, "ask a cluster admin to check the driver's DaemonSet placement"
    if ds is None:
        evidence.append(f"no DaemonSet {names.DAEMONSET} in namespace {facts.driver_namespace}")
        return (
            evidence,
            "the operator creates it from the ClusterCSIDriver: check its conditions and the operator",
        )
    st = ds.get("status") or {}
    evidence.append(
        f"DaemonSet {ref(ds)}: {st.get('numberReady', 0)}/{st.get('desiredNumberScheduled', 0)} pods ready"
    )
    template = (ds.get("spec") or {}).get("template", {}).get("spec") or {}
    if isinstance(facts.node, dict):
        mismatch = node_label_mismatch(facts.node, template.get("nodeSelector") or {})
        taints = untolerated_taints(facts.node, template.get("tolerations") or [])
        if mismatch:
            evidence.append(f"node {node} lacks the DaemonSet's nodeSelector labels: {', '.join(mismatch)}")
            return evidence, (
                f"label node {node} ({', '.join(mismatch)}) or change the ClusterCSIDriver's "
                "spec.driverConfig.secretsStore.nodePlacement.nodeSelector"
            )
        if taints:
            evidence.append(f"node {node} has taints the DaemonSet does not tolerate: {', '.join(taints)}")
            return evidence, "add tolerations in spec.driverConfig.secretsStore.nodePlacement.tolerations"
    elif isinstance(facts.node, Denied):
        evidence.append(f"could not compare the node's labels: {facts.node}")
    return evidence, f"kubectl describe daemonset -n {facts.driver_namespace} {names.DAEMONSET}"


def check_csinode(facts: PodFacts) -> Link:
    csinode, node = facts.csinode, facts.node_name
    if isinstance(csinode, Denied):
        return denied(CSINODE, csinode)
    drivers = ((csinode or {}).get("spec") or {}).get("drivers") or []
    for driver in drivers:
        if driver.get("name") == names.DRIVER_NAME:
            return ok(CSINODE, f"CSINode {node} lists {names.DRIVER_NAME} (node ID {driver.get('nodeID')})")
    pods = facts.driver_pods if isinstance(facts.driver_pods, list) else []
    mine = [p for p in pods if (p.get("spec") or {}).get("nodeName") == node]
    # The driver registers itself with kubelet and logs each outcome.
    ns = facts.driver_namespace
    fix = (
        f"kubectl logs -n {ns} {mine[0]['metadata']['name']} -c {names.DRIVER_CONTAINER}: "
        '"registered with kubelet" once kubelet accepted the driver, otherwise '
        '"kubelet refused the registration; registering again" with kubelet\'s error'
        if mine
        else "kubelet registers the driver once its pod runs on the node (see the driver link)"
    )
    what = f"no CSINode {node}" if csinode is None else f"CSINode {node} does not list {names.DRIVER_NAME}"
    listed = ", ".join(str(d.get("name")) for d in drivers) or "none"
    return broken(CSINODE, "DriverNotRegistered", [what, f"drivers registered there: {listed}"], fix)
