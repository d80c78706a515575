"""Uninstalling, in the documented order and in the wrong ones, on the real control plane (kwok nodes,
the real garbage collector):

- removal (the ClusterCSIDriver deleted, or managementState Removed) waits while application pods use
  the driver, says which in a condition and a Warning; the force-removal annotation overrides it;
- the operator gone (killed, its namespace deleted, or the CRD deleted first): nothing hangs for
  good, and the one command docs/install-olm.md gives releases the ClusterCSIDriver, after which the
  garbage collector removes the driver (every child has an ownerReference to it);
- the operator stopped leaves the driver running; started again, it adopts the same objects.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import REPO_ROOT, Cluster
from operator_fixtures import (
    CR_NAME,
    CR_RESOURCE,
    CRD_FILES,
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
    CSIDRIVER,
    DAEMONSET,
    MANAGED_BY,
    SERVICE,
    apply_cr,
    conditions,
    daemonset,
    ensure_settled,
    get_cr,
    spec_with,
)

__all__ = ["kwok_nodes", "operator", "operator_crds"]  # fixtures, imported for pytest

FORCE_REMOVAL = "operator.secrets-store.csi.x-k8s.io/force-removal"
SELECTOR = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
CLUSTER_KINDS = (
    "csidrivers,clusterroles,clusterrolebindings,"
    "validatingadmissionpolicies,validatingadmissionpolicybindings"
)
NAMESPACED_KINDS = "daemonsets,services,serviceaccounts"
DOCS = REPO_ROOT / "docs" / "install-olm.md"


def release_command() -> list[str]:
    """The one command docs/install-olm.md gives for a ClusterCSIDriver the operator can no longer
    release (run exactly as documented, minus the leading `kubectl`)."""
    text = DOCS.read_text()
    uninstall = text[text.index("## Uninstall") :]
    [line] = re.findall(r"^kubectl patch clustercsidriver .*$", uninstall, flags=re.MULTILINE)
    argv = shlex.split(line)
    return argv[1:]


def app_pod(name: str) -> dict[str, Any]:
    """A pod with an inline volume of the driver, on a kwok node (kwok runs it without mounting)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": KWOK_NODES[0],
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "app", "image": "example.invalid/sscsi/app:e2e"}],
            "volumes": [
                {
                    "name": "secrets",
                    "csi": {
                        "driver": CSIDRIVER,
                        "readOnly": True,
                        "volumeAttributes": {"secretProviderClass": "e2e"},
                    },
                }
            ],
        },
    }


def start_app_pod(cluster: Cluster, namespace: str, name: str = "reads-secrets") -> str:
    cluster.apply(app_pod(name), namespace=namespace)

    def running() -> bool:
        pod = kubectl_json(cluster, "pod", name, "-n", namespace) or {}
        return bool(pod.get("status", {}).get("phase") == "Running")

    wait_until(f"pod {namespace}/{name} to run", running, timeout=60)
    return f"{namespace}/{name}"


def stop_app_pod(cluster: Cluster, namespace: str, name: str = "reads-secrets") -> None:
    must(cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false"))
    wait_until(
        f"pod {namespace}/{name} to go",
        lambda: kubectl_json(cluster, "pod", name, "-n", namespace) is None,
        timeout=60,
    )


def events(cluster: Cluster, uid: str, reason: str) -> list[str]:
    found = kubectl_json(cluster, "events", "-n", "default", f"--field-selector=involvedObject.uid={uid}")
    return [e["message"] for e in (found or {}).get("items", []) if e["reason"] == reason]


def waiting_for(cluster: Cluster, pod: str) -> dict[str, Any]:
    """The CR once its Progressing condition says removal waits for `pod`."""

    def reported() -> dict[str, Any] | None:
        cr = get_cr(cluster)
        progressing = conditions(cr).get("Progressing", {})
        waiting = progressing.get("reason") == "WaitingForPods" and pod in progressing.get("message", "")
        return cr if waiting else None

    cr: dict[str, Any] = wait_until(f"Progressing=WaitingForPods naming {pod}", reported, timeout=30)
    return cr


def leftovers(cluster: Cluster, namespace: str) -> list[str]:
    """Every object of the driver still there: labelled, or by name (a child may have lost its label)."""
    found = [
        f"{item['kind']} {item['metadata']['name']}"
        for kinds, scope in ((CLUSTER_KINDS, []), (NAMESPACED_KINDS, ["-n", namespace]))
        for item in (kubectl_json(cluster, kinds, "-l", SELECTOR, *scope) or {"items": []})["items"]
    ]
    if kubectl_json(cluster, "csidriver", CSIDRIVER) is not None:
        found.append(f"CSIDriver {CSIDRIVER}")
    pods = kubectl_json(cluster, "pods", "-n", namespace, "-l", f"app={DAEMONSET}")
    found += [f"Pod {p['metadata']['name']}" for p in (pods or {"items": []})["items"]]
    return sorted(set(found))


def assert_driver_untouched(cluster: Cluster, operator: OperatorProcess, seconds: float) -> None:
    """The driver is still installed `seconds` later (several periodic passes)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert daemonset(cluster, operator) is not None, "the DaemonSet was removed"
        assert kubectl_json(cluster, "csidriver", CSIDRIVER) is not None, "the CSIDriver was removed"
        time.sleep(0.5)


@pytest.fixture
def installed(cluster: Cluster, operator: OperatorProcess) -> Iterator[dict[str, Any]]:
    """The driver installed and Available; afterwards no ClusterCSIDriver is left behind."""
    if operator.popen is None or operator.popen.poll() is not None:
        operator.start()
    yield ensure_settled(cluster, operator)
    if get_cr(cluster) is not None:
        if operator.popen is None or operator.popen.poll() is not None:
            operator.start()
        cluster.kubectl("annotate", CR_RESOURCE, CR_NAME, f"{FORCE_REMOVAL}=true", "--overwrite")
        cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=true", "--timeout=60s")


@pytest.mark.parametrize("how", ["deleted", "managementState-Removed"])
def test_removal_waits_while_a_pod_uses_the_driver_and_names_it(
    cluster: Cluster, operator: OperatorProcess, installed: dict[str, Any], namespace: str, how: str
) -> None:
    pod = start_app_pod(cluster, namespace)
    if how == "deleted":
        must(cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=false"))
    else:
        apply_cr(cluster, spec_with(managementState="Removed"))
    cr = waiting_for(cluster, pod)
    assert "1 pod using the driver" in conditions(cr)["Progressing"]["message"]
    assert conditions(cr)["Available"]["status"] == "True"  # it still serves that pod
    uid = installed["metadata"]["uid"]
    wait_until(
        "a WaitingForPods Warning naming the pod",
        lambda: any(pod in m for m in events(cluster, uid, "WaitingForPods")),
    )
    assert_driver_untouched(cluster, operator, 3 * RESYNC_SECONDS)
    if how == "deleted":
        assert get_cr(cluster) is not None  # held by the finalizer, on purpose
    assert len(events(cluster, uid, "WaitingForPods")) == 1  # not one per pass

    stop_app_pod(cluster, namespace)
    if how == "deleted":
        wait_until("the ClusterCSIDriver to be released", lambda: get_cr(cluster) is None, timeout=30)
    else:

        def removed() -> bool:
            progressing = conditions(get_cr(cluster)).get("Progressing", {})
            return progressing.get("reason") == "Removed"

        wait_until("Progressing=Removed", removed, timeout=30)
    wait_until(
        "every object of the driver to go", lambda: leftovers(cluster, operator.namespace) == [], timeout=60
    )


def test_the_force_removal_annotation_removes_the_driver_anyway(
    cluster: Cluster, operator: OperatorProcess, installed: dict[str, Any], namespace: str
) -> None:
    pod = start_app_pod(cluster, namespace)
    must(cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=false"))
    waiting_for(cluster, pod)
    assert_driver_untouched(cluster, operator, RESYNC_SECONDS)
    started = time.monotonic()
    must(cluster.kubectl("annotate", CR_RESOURCE, CR_NAME, f"{FORCE_REMOVAL}=true"))
    wait_until("the ClusterCSIDriver to be released", lambda: get_cr(cluster) is None, timeout=30)
    elapsed = time.monotonic() - started
    wait_until(
        "every object of the driver to go", lambda: leftovers(cluster, operator.namespace) == [], timeout=60
    )
    [forced] = events(cluster, installed["metadata"]["uid"], "RemovalForced")
    assert pod in forced
    assert (
        kubectl_json(cluster, "pod", "reads-secrets", "-n", namespace) is not None
    )  # not the operator's to stop
    assert elapsed < 15, f"forced removal took {elapsed:.1f}s"


def test_a_killed_operator_leaves_a_finalizer_that_the_documented_command_releases(
    cluster: Cluster, operator: OperatorProcess, installed: dict[str, Any]
) -> None:
    """Operator killed (or its CSV deleted first), then the ClusterCSIDriver deleted: the delete waits
    for the finalizer; the one documented command releases it and the garbage collector removes the
    driver: nothing left, nothing hangs."""
    operator.kill()
    must(cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=false"))
    time.sleep(2 * RESYNC_SECONDS)
    stuck = get_cr(cluster)
    assert stuck is not None and stuck["metadata"].get("deletionTimestamp"), "nothing held the deletion"
    assert daemonset(cluster, operator) is not None  # nobody removed anything yet

    started = time.monotonic()
    must(cluster.kubectl(*release_command()))
    wait_until("the ClusterCSIDriver to go", lambda: get_cr(cluster) is None, timeout=30)
    wait_until(
        "the garbage collector to remove the driver",
        lambda: leftovers(cluster, operator.namespace) == [],
        timeout=90,
    )
    print(f"released and garbage-collected in {time.monotonic() - started:.1f}s")
    operator.start()  # for the next tests; it finds nothing to do
    assert get_cr(cluster) is None


def test_a_stopped_operator_leaves_the_driver_running_and_adopts_it_again(
    cluster: Cluster, operator: OperatorProcess, installed: dict[str, Any]
) -> None:
    """Removing the operator does not remove the driver; reinstalling it takes the same objects back
    under management: same UIDs, no duplicates, no rollout of the driver's pods."""
    namespace = operator.namespace

    def snapshot() -> dict[str, tuple[str, str]]:
        objects = {}
        for kinds, scope in ((CLUSTER_KINDS, []), (NAMESPACED_KINDS, ["-n", namespace])):
            for item in (kubectl_json(cluster, kinds, "-l", SELECTOR, *scope) or {"items": []})["items"]:
                key = f"{item['kind']} {item['metadata']['name']}"
                objects[key] = (item["metadata"]["uid"], str(item["metadata"].get("generation", "")))
        pods = kubectl_json(cluster, "pods", "-n", namespace, "-l", f"app={DAEMONSET}") or {"items": []}
        for pod in pods["items"]:
            objects[f"Pod {pod['metadata']['name']}"] = (
                pod["metadata"]["uid"],
                pod["status"].get("phase", ""),
            )
        return objects

    before = snapshot()
    assert len([key for key in before if key.startswith("Pod ")]) == len(KWOK_NODES)
    uid = installed["metadata"]["uid"]
    created = [m for m in events(cluster, uid, "Applied") if "created" in m]
    assert created, "the first install posted no Applied event"
    operator.stop()  # SIGTERM, as when OLM deletes the CSV's Deployment
    time.sleep(3 * RESYNC_SECONDS)
    assert snapshot() == before  # still installed and running, untouched
    ds = daemonset(cluster, operator) or {}
    assert ds.get("status", {}).get("numberReady") == len(KWOK_NODES)

    offset = operator.log_size()
    operator.start()
    wait_until(
        "the restarted operator's first pass", lambda: "Reconciling generation" in operator.log()[offset:]
    )
    cr = ensure_settled(cluster, operator, installed["spec"])
    assert snapshot() == before  # the same objects, none added, none rolled
    found = conditions(cr)
    assert found["Available"]["status"] == "True" and found["Degraded"]["status"] == "False"
    # The new operator created nothing: it adopted what its field manager had applied before.
    assert [m for m in events(cluster, uid, "Applied") if "created" in m] == created

    # Managed again for real: drift is repaired by the new operator.
    must(cluster.kubectl("delete", "service", SERVICE, "-n", namespace))
    wait_until(
        "the Service to be restored",
        lambda: kubectl_json(cluster, "service", SERVICE, "-n", namespace) is not None,
        timeout=3 * RESYNC_SECONDS + 10,
    )


def test_the_crd_deleted_first_waits_for_the_same_one_command(
    cluster: Cluster, operator: OperatorProcess, installed: dict[str, Any]
) -> None:
    """CRDs deleted before the ClusterCSIDriver with the operator gone: the CRD's deletion waits for
    its object, which the one command releases; the garbage collector still removes the driver."""
    operator.kill()
    crd = f"crd/{CR_RESOURCE}"
    try:
        must(cluster.kubectl("delete", crd, "--wait=false"))
        time.sleep(2 * RESYNC_SECONDS)
        terminating = kubectl_json(cluster, crd)
        assert terminating is not None and terminating["metadata"].get("deletionTimestamp")
        must(cluster.kubectl(*release_command()))
        wait_until("the CRD to go", lambda: kubectl_json(cluster, crd) is None, timeout=60)
        wait_until(
            "the garbage collector to remove the driver",
            lambda: leftovers(cluster, operator.namespace) == [],
            timeout=90,
        )
    finally:
        for path in CRD_FILES:
            cluster.apply(path)
        must(cluster.kubectl("wait", "--for=condition=Established", crd, "--timeout=30s"))
        operator.start()


def test_the_operators_namespace_deleted_with_everything_in_it(
    cluster: Cluster, operator: OperatorProcess, installed: dict[str, Any]
) -> None:
    """The wrong order with the widest blast radius: the namespace goes (operator, DaemonSet and all).
    Nothing hangs; the cluster-scoped rest goes with the ClusterCSIDriver and the one command.
    Runs last in this module: the module's operator has no namespace afterwards."""
    namespace = operator.namespace
    operator.kill()  # its pod would go with the namespace
    must(cluster.kubectl("delete", "namespace", namespace, "--wait=false"))
    wait_until(
        f"namespace {namespace} to be deleted",
        lambda: kubectl_json(cluster, "namespace", namespace) is None,
        timeout=120,
    )
    assert get_cr(cluster) is not None  # cluster-scoped: the namespace does not take it along
    assert kubectl_json(cluster, "csidriver", CSIDRIVER) is not None

    must(cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=false"))
    must(cluster.kubectl(*release_command()))
    wait_until("the ClusterCSIDriver to go", lambda: get_cr(cluster) is None, timeout=30)

    def cluster_leftovers() -> list[str]:
        items = (kubectl_json(cluster, CLUSTER_KINDS, "-l", SELECTOR) or {"items": []})["items"]
        found = [f"{item['kind']} {item['metadata']['name']}" for item in items]
        return found + (["CSIDriver"] if kubectl_json(cluster, "csidriver", CSIDRIVER) else [])

    wait_until("the garbage collector to remove the rest", lambda: cluster_leftovers() == [], timeout=90)
