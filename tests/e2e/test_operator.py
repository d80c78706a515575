"""The operator on the real control plane, with kwok nodes so the driver's DaemonSet pods become Ready.

Every scenario runs twice: once with the operator left alone, once with the operator SIGKILLed in the
middle of the work and started again. The outcome must be the same.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster import Cluster
from operator_fixtures import (
    CR_NAME,
    CR_RESOURCE,
    IMAGES,
    KWOK_LABEL,
    KWOK_NODES,
    RESYNC_SECONDS,
    OperatorProcess,
    kubectl_json,
    kwok_nodes,
    must,
    operator,
    operator_crds,
    wait_until,
)
from operator_state import (
    BASE_SPEC,
    BINDINGS,
    CLUSTER_ROLES,
    CSIDRIVER,
    DAEMONSET,
    FINALIZER,
    MANAGED_BY,
    SERVICE,
    SERVICE_ACCOUNT,
    apply_cr,
    conditions,
    daemonset,
    driver_args,
    ensure_no_cr,
    ensure_settled,
    get_cr,
    labelled,
    owned_by,
    spec_with,
    wait_settled,
)

__all__ = ["kwok_nodes", "operator", "operator_crds"]  # fixtures, imported for pytest

# Drift must be gone within this (the periodic pass is RESYNC_SECONDS; child events are faster).
REPAIR_BOUND = 3 * RESYNC_SECONDS + 5
RESTART = pytest.mark.parametrize("restart", [False, True], ids=["steady", "operator-killed-midway"])


def act(
    operator: OperatorProcess,
    restart: bool,
    action: Callable[[], object],
    marker: str = "Reconciling generation",
) -> None:
    """Do `action`; when restarting, SIGKILL the operator once it logs `marker` (mid-way through the
    work the action caused) and start it again."""
    offset = operator.log_size()
    action()
    if restart:
        operator.kill_when_logged(marker, offset)
        operator.start()


class ConditionWatch:
    """Records (Progressing, Available) of every version of the CR, from a `kubectl --watch`."""

    def __init__(self, cluster: Cluster) -> None:
        template = (
            '{.metadata.resourceVersion} {.status.conditions[?(@.type=="Progressing")].status}'
            ',{.status.conditions[?(@.type=="Available")].status}{"\\n"}'
        )
        self._process = subprocess.Popen(
            [
                str(cluster.kubectl_path),
                f"--kubeconfig={cluster.kubeconfig}",
                "get",
                CR_RESOURCE,
                f"--field-selector=metadata.name={CR_NAME}",
                "--watch",
                "-o",
                f"jsonpath={template}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(0.5)  # let the watch start before the CR is created

    def stop(self) -> list[tuple[str, str]]:
        self._process.terminate()
        out, _ = self._process.communicate(timeout=10)
        states = []
        for line in out.splitlines():
            _, _, pair = line.partition(" ")
            progressing, _, available = pair.partition(",")
            if progressing or available:
                states.append((progressing, available))
        return states


@RESTART
def test_create_deploys_everything_and_it_becomes_available(
    cluster: Cluster, operator: OperatorProcess, restart: bool
) -> None:
    ensure_no_cr(cluster)
    namespace = operator.namespace
    watch = ConditionWatch(cluster)
    act(operator, restart, lambda: apply_cr(cluster, BASE_SPEC))
    cr = wait_settled(cluster, operator)
    states = watch.stop()
    if not restart:  # a restarted operator may only get to see the end of the rollout
        assert ("True", "False") in states, states
        assert states.index(("True", "False")) < states.index(("False", "True")), states

    assert FINALIZER in cr["metadata"]["finalizers"]
    status = cr["status"]
    assert status["readyReplicas"] == len(KWOK_NODES)
    assert status["version"]
    found = conditions(cr)
    for kind in ("NodeServiceAvailable", "Upgradeable"):
        assert found[kind]["status"] == "True"
    for kind in ("NodeServiceProgressing", "NodeServiceDegraded", "StaticResourcesDegraded"):
        assert found[kind]["status"] == "False"

    csidriver = kubectl_json(cluster, "csidriver", CSIDRIVER)
    assert csidriver is not None
    assert csidriver["spec"]["podInfoOnMount"] is True
    assert csidriver["spec"]["attachRequired"] is False
    assert csidriver["spec"]["volumeLifecycleModes"] == ["Ephemeral"]
    assert csidriver["spec"]["requiresRepublish"] is True
    assert (
        csidriver["metadata"]["labels"]["security.openshift.io/csi-ephemeral-volume-profile"] == "restricted"
    )

    ds = daemonset(cluster, operator)
    assert ds is not None
    pod = ds["spec"]["template"]["spec"]
    assert {c["name"]: c["image"] for c in pod["containers"]} == {
        "csi-driver": IMAGES["DRIVER_IMAGE"],
        "csi-liveness-probe": IMAGES["LIVENESS_PROBE_IMAGE"],
    }
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", KWOK_LABEL: "true"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert "--enable-secret-rotation=true" in driver_args(ds)
    assert "--rotation-poll-interval=2m" in driver_args(ds)
    assert "--enable-secret-sync=true" in driver_args(ds)
    # The driver registers itself with kubelet: no registrar container, the flags on the driver.
    registration = [a for a in driver_args(ds) if "registration" in a]
    assert registration == [
        "--kubelet-registration-path=/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
        "--plugin-registration-dir=/registration",
    ]
    [generation] = status["generations"]
    assert generation["lastGeneration"] == ds["metadata"]["generation"]
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert generation["hash"] == annotations["operator.secrets-store.csi.x-k8s.io/config-hash"]

    pods = kubectl_json(cluster, "pods", "-n", namespace, "-l", f"app={DAEMONSET}")
    assert pods is not None
    assert sorted(p["spec"]["nodeName"] for p in pods["items"]) == sorted(KWOK_NODES)

    children = [
        csidriver,
        ds,
        kubectl_json(cluster, "serviceaccount", SERVICE_ACCOUNT, "-n", namespace),
        kubectl_json(cluster, "service", SERVICE, "-n", namespace),
        *(kubectl_json(cluster, "clusterrole", name) for name in CLUSTER_ROLES),
        *(kubectl_json(cluster, "clusterrolebinding", name) for name in BINDINGS),
    ]
    for child in children:
        assert child is not None
        assert labelled(child) and owned_by(child, cr), child["metadata"]["name"]
    service = children[3]
    assert service is not None and service["spec"]["ports"][0]["port"] == 8095

    if not restart:
        events = kubectl_json(
            cluster, "events", "-n", "default", f"--field-selector=involvedObject.uid={cr['metadata']['uid']}"
        )
        assert events is not None
        assert any(e["reason"] == "Applied" and "created DaemonSet" in e["message"] for e in events["items"])


@RESTART
def test_rotation_none_stops_republish_and_rolls_the_daemonset(
    cluster: Cluster, operator: OperatorProcess, restart: bool
) -> None:
    before = ensure_settled(cluster, operator)
    ds_generation = (daemonset(cluster, operator) or {})["metadata"]["generation"]
    act(operator, restart, lambda: apply_cr(cluster, spec_with(store={"secretRotation": {"type": "None"}})))
    cr = wait_settled(cluster, operator)
    assert cr["metadata"]["generation"] > before["metadata"]["generation"]
    csidriver = kubectl_json(cluster, "csidriver", CSIDRIVER)
    assert csidriver is not None and csidriver["spec"]["requiresRepublish"] is False
    ds = daemonset(cluster, operator)
    assert ds is not None and ds["metadata"]["generation"] > ds_generation
    assert "--enable-secret-rotation=false" in driver_args(ds)
    assert cr["status"]["generations"][0]["hash"] != before["status"]["generations"][0]["hash"]

    custom = {"secretRotation": {"type": "Custom", "custom": {"minimumRefreshAge": 90}}}
    apply_cr(cluster, spec_with(store=custom))
    wait_settled(cluster, operator)
    assert "--rotation-poll-interval=90s" in driver_args(daemonset(cluster, operator))
    assert (kubectl_json(cluster, "csidriver", CSIDRIVER) or {})["spec"]["requiresRepublish"] is True


@RESTART
def test_sync_off_removes_the_sync_role(cluster: Cluster, operator: OperatorProcess, restart: bool) -> None:
    ensure_settled(cluster, operator)
    act(operator, restart, lambda: apply_cr(cluster, spec_with(store={"syncSecret": {"enabled": False}})))
    wait_settled(cluster, operator)
    assert kubectl_json(cluster, "clusterrole", "secretprovidersyncing-role") is None
    assert kubectl_json(cluster, "clusterrolebinding", "secretprovidersyncing-rolebinding") is None
    assert kubectl_json(cluster, "clusterrole", "secretproviderclasses-role") is not None
    assert "--enable-secret-sync=false" in driver_args(daemonset(cluster, operator))

    ensure_settled(cluster, operator)  # and back on
    assert kubectl_json(cluster, "clusterrole", "secretprovidersyncing-role") is not None
    assert kubectl_json(cluster, "clusterrolebinding", "secretprovidersyncing-rolebinding") is not None


@RESTART
def test_deleted_and_edited_children_are_restored(
    cluster: Cluster, operator: OperatorProcess, restart: bool
) -> None:
    """No CR change: the DaemonSet, RBAC and CSIDriver come back as declared (restart: the damage is
    done while the operator is down)."""
    ensure_settled(cluster, operator)
    namespace = operator.namespace
    if restart:
        operator.kill()
    started = time.monotonic()
    must(cluster.kubectl("delete", "daemonset", DAEMONSET, "-n", namespace, "--wait=false"))
    must(cluster.kubectl("delete", "clusterrole", "secretproviderclasses-role"))
    must(cluster.kubectl("delete", "clusterrolebinding", "secretprovidersyncing-rolebinding"))
    must(cluster.kubectl("label", "service", SERVICE, "-n", namespace, f"{MANAGED_BY[0]}-"))
    # A CSIDriver replaced by hand with fields that cannot change in place: the operator recreates it.
    foreign = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": CSIDRIVER},
        "spec": {"attachRequired": True, "volumeLifecycleModes": ["Persistent", "Ephemeral"]},
    }

    def replaced_by_hand() -> bool:  # a running operator may put its own back in between
        cluster.kubectl("delete", "csidriver", CSIDRIVER, "--ignore-not-found")
        return cluster.kubectl("create", "-f", "-", input=json.dumps(foreign)).returncode == 0

    wait_until("a CSIDriver created by someone else", replaced_by_hand, timeout=20)
    if restart:
        operator.start()

    def repaired() -> bool:
        csidriver = kubectl_json(cluster, "csidriver", CSIDRIVER) or {"spec": {}, "metadata": {}}
        role = kubectl_json(cluster, "clusterrole", "secretproviderclasses-role")
        binding = kubectl_json(cluster, "clusterrolebinding", "secretprovidersyncing-rolebinding")
        service = kubectl_json(cluster, "service", SERVICE, "-n", namespace)
        return bool(
            daemonset(cluster, operator) is not None
            and role is not None
            and binding is not None
            and service is not None
            and labelled(service)
            and csidriver["spec"].get("attachRequired") is False
            and csidriver["spec"].get("volumeLifecycleModes") == ["Ephemeral"]
            and labelled(csidriver)
        )

    wait_until("every child to be repaired", repaired, timeout=REPAIR_BOUND + (10 if restart else 0))
    elapsed = time.monotonic() - started
    assert elapsed < REPAIR_BOUND + (10 if restart else 0)
    cr = wait_settled(cluster, operator)
    role = kubectl_json(cluster, "clusterrole", "secretproviderclasses-role")
    assert role is not None and owned_by(role, cr)
    assert any(rule["resources"] == ["secretproviderclasspodstatuses"] for rule in role["rules"])


@RESTART
def test_unmanaged_leaves_manual_edits_alone(
    cluster: Cluster, operator: OperatorProcess, restart: bool
) -> None:
    ensure_settled(cluster, operator)
    namespace = operator.namespace
    act(
        operator,
        restart,
        lambda: apply_cr(cluster, spec_with(managementState="Unmanaged")),
        marker="(Unmanaged, spec)",
    )

    def unmanaged() -> bool:
        cr = get_cr(cluster) or {"metadata": {}}
        progressing = conditions(cr).get("Progressing", {})
        current = cr.get("status", {}).get("observedGeneration") == cr["metadata"].get("generation")
        return current and progressing.get("reason") == "Unmanaged"

    wait_until("the Unmanaged status", unmanaged)
    # The driver's -v flag, by position: a JSON patch replaces one list element.
    v = next(i for i, arg in enumerate(driver_args(daemonset(cluster, operator))) if arg.startswith("-v="))
    verbose = [{"op": "replace", "path": f"/spec/template/spec/containers/0/args/{v}", "value": "-v=9"}]
    must(
        cluster.kubectl(
            "patch", "daemonset", DAEMONSET, "-n", namespace, "--type=json", "-p", json.dumps(verbose)
        )
    )
    must(cluster.kubectl("delete", "service", SERVICE, "-n", namespace))
    time.sleep(RESYNC_SECONDS * 1.5)
    if restart:
        operator.restart()
    time.sleep(RESYNC_SECONDS * 1.5)
    assert driver_args(daemonset(cluster, operator))[v] == "-v=9"
    assert kubectl_json(cluster, "service", SERVICE, "-n", namespace) is None
    found = conditions(get_cr(cluster))
    assert found["Upgradeable"]["status"] == "False" and found["Upgradeable"]["reason"] == "Unmanaged"

    ensure_settled(cluster, operator)  # Managed again: everything as declared
    assert driver_args(daemonset(cluster, operator))[v] == "-v=2"
    assert kubectl_json(cluster, "service", SERVICE, "-n", namespace) is not None


@RESTART
def test_deleting_the_cr_removes_everything_then_releases_it(
    cluster: Cluster, operator: OperatorProcess, restart: bool
) -> None:
    """Restart: a finalizer of someone else holds the Service, so removal is still waiting when the
    operator is killed; the hold is lifted while the operator is down."""
    ensure_settled(cluster, operator)
    namespace = operator.namespace
    hold = '{"metadata":{"finalizers":["sscsi.test/hold"]}}'
    if restart:
        must(cluster.kubectl("patch", "service", SERVICE, "-n", namespace, "--type=merge", "-p", hold))
    offset = operator.log_size()
    must(cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=false"))
    if restart:
        operator.kill_when_logged(f"waiting for Service {namespace}/{SERVICE}", offset)
        assert daemonset(cluster, operator) is None  # removal was under way
        assert get_cr(cluster) is not None  # and the CR still held by the operator's finalizer
        release = '{"metadata":{"finalizers":null}}'
        must(cluster.kubectl("patch", "service", SERVICE, "-n", namespace, "--type=merge", "-p", release))
        operator.start()

    wait_until("the ClusterCSIDriver to be released", lambda: get_cr(cluster) is None, timeout=30)
    selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
    for kinds, scope in (
        (
            "csidrivers,clusterroles,clusterrolebindings,"
            "validatingadmissionpolicies,validatingadmissionpolicybindings",
            [],
        ),
        ("daemonsets,services,serviceaccounts", ["-n", namespace]),
    ):
        leftovers = kubectl_json(cluster, kinds, "-l", selector, *scope)
        assert leftovers is not None and leftovers["items"] == [], leftovers
    assert kubectl_json(cluster, "csidriver", CSIDRIVER) is None
    for name in CLUSTER_ROLES:
        assert kubectl_json(cluster, "clusterrole", name) is None

    def pods_gone() -> bool:
        pods = kubectl_json(cluster, "pods", "-n", namespace, "-l", f"app={DAEMONSET}")
        return pods is not None and pods["items"] == []

    wait_until("the driver pods to be garbage-collected", pods_gone, timeout=60)


SERVICE_MONITORS = "servicemonitors.monitoring.coreos.com"


@pytest.fixture
def service_monitor_crd(cluster: Cluster) -> Iterator[None]:
    """The ServiceMonitor CRD (a schemaless stand-in when the Prometheus operator's is not installed)."""
    installed_here = kubectl_json(cluster, "crd", SERVICE_MONITORS) is None
    if installed_here:
        cluster.apply(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": SERVICE_MONITORS},
                "spec": {
                    "group": "monitoring.coreos.com",
                    "scope": "Namespaced",
                    "names": {
                        "kind": "ServiceMonitor",
                        "plural": "servicemonitors",
                        "singular": "servicemonitor",
                    },
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    ],
                },
            }
        )
        must(
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{SERVICE_MONITORS}", "--timeout=30s")
        )
    try:
        yield
    finally:
        if installed_here:
            cluster.kubectl("delete", "crd", SERVICE_MONITORS, "--wait=false")


def test_a_service_monitor_is_created_once_its_crd_exists(
    cluster: Cluster, operator: OperatorProcess, service_monitor_crd: None
) -> None:
    cr = ensure_settled(cluster, operator)
    namespace = operator.namespace

    def monitor() -> dict[str, Any] | None:
        return kubectl_json(cluster, SERVICE_MONITORS, SERVICE, "-n", namespace)

    found = wait_until("the ServiceMonitor (next periodic pass)", monitor, timeout=REPAIR_BOUND)
    assert labelled(found) and owned_by(found, cr)
    assert found["spec"]["selector"] == {"matchLabels": {"app": DAEMONSET}}
    assert found["spec"]["endpoints"][0]["port"] == "metrics"
    must(cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=true", "--timeout=30s"))
    assert monitor() is None


@contextlib.contextmanager
def frozen_daemonsets(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy that rejects every write to DaemonSets in `namespace`."""
    name = "sscsi-e2e-freeze-daemonsets"
    message = "sscsi-e2e: DaemonSets are frozen"
    rule = {
        "apiGroups": ["apps"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["daemonsets"],
    }
    cluster.apply(
        [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [rule]},
                    "validations": [{"expression": "false", "message": message}],
                },
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name},
                "spec": {
                    "policyName": name,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                    },
                },
            },
        ]
    )

    def enforced() -> bool:
        out = cluster.kubectl(
            "label", "daemonset", DAEMONSET, "-n", namespace, "sscsi.test/probe=1", "--dry-run=server"
        )
        return out.returncode != 0 and message in out.stderr

    try:
        wait_until("the admission policy to be enforced", enforced, timeout=30, interval=0.3)
        yield message
    finally:
        cluster.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found"
        )


def test_a_failing_apply_is_degraded_with_the_apiservers_message(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ensure_settled(cluster, operator)
    with frozen_daemonsets(cluster, operator.namespace) as message:
        apply_cr(cluster, spec_with(logLevel="Debug"))

        def node_degraded() -> dict[str, str] | None:
            node = conditions(get_cr(cluster)).get("NodeServiceDegraded", {})
            return node if node.get("status") == "True" else None

        node = wait_until("NodeServiceDegraded", node_degraded)
        assert node["reason"] == "ApplyFailed" and message in node["message"]
        found = conditions(get_cr(cluster))
        assert found["Degraded"]["status"] == "True" and message in found["Degraded"]["message"]
        assert found["Available"]["status"] == "True"  # the pods already running still serve
    cr = wait_settled(cluster, operator)  # the policy is gone: the next attempt succeeds
    containers = (daemonset(cluster, operator) or {})["spec"]["template"]["spec"]["containers"]
    assert all("-v=4" in container["args"] for container in containers)
    uid = cr["metadata"]["uid"]
    events = kubectl_json(cluster, "events", "-n", "default", f"--field-selector=involvedObject.uid={uid}")
    assert events is not None
    assert any(e["type"] == "Warning" and message in e["message"] for e in events["items"])
