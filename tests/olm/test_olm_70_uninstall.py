"""Scenario 5: uninstall, in the documented order and in the wrong orders a real admin uses.

docs/install-olm.md "Uninstall": pods that use the driver first, then the ClusterCSIDriver, the
Subscription, the CSV (and, when that is the intent, the CRDs). Removal waits while application pods
use the driver. In the wrong orders nothing may hang for good; what remains is released by the one
documented command (DOCUMENTED_RELEASE), which these tests run exactly as written there.
"""

from __future__ import annotations

import json

from node.nodekit import DRIVER_NAME, Kube, wait_for
from olmkit import (
    CATALOG,
    CR_NAME,
    MANAGED_BY,
    NAMESPACE,
    OLM_NS,
    PACKAGE,
    SUBSCRIPTION,
    App,
    Live,
    cluster_csi_driver,
    csinode_has_driver,
    daemonset_ready,
    install_plans,
    installed_csv,
    namespace_and_group,
    rendered_objects,
    sigkill_container,
    sleep_checking,
    subscription,
    wait_csv_succeeded,
)

DOCUMENTED_RELEASE = [
    "patch",
    "clustercsidriver",
    CR_NAME,
    "--type=merge",
    "-p",
    '{"metadata":{"finalizers":null}}',
]
CRDS = (
    "secretproviderclasses.secrets-store.csi.x-k8s.io",
    "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io",
    "clustercsidrivers.operator.secrets-store.csi.x-k8s.io",
)
OLM_LABEL = f"operators.coreos.com/{PACKAGE}.{NAMESPACE}"


def _conditions(kube: Kube) -> dict[str, dict[str, str]]:
    cr = kube.get("clustercsidriver", CR_NAME)
    return {c["type"]: c for c in cr.get("status", {}).get("conditions", [])}


def _install(live: Live) -> str:
    kube = live.kube
    kube.apply(namespace_and_group())
    kube.apply(subscription())
    csv = wait_for("the Subscription's installedCSV", lambda: installed_csv(kube), 300, interval=2)
    wait_csv_succeeded(kube, csv)
    kube.apply(cluster_csi_driver())
    wait_for("the driver ready", lambda: daemonset_ready(kube), 300, interval=2)
    return csv


def _remove_operator(kube: Kube) -> None:
    csv = installed_csv(kube)
    kube.delete("subscription", SUBSCRIPTION, NAMESPACE)
    if csv:
        kube.delete("csv", csv, NAMESPACE)


def _nothing_left(live: Live, crds_deleted: bool = False) -> None:
    kube = live.kube
    if not crds_deleted:
        assert not kube.exists("clustercsidriver", CR_NAME)
    wait_for("the driver's objects gone", lambda: not any(rendered_objects(kube).values()), 120, interval=2)
    assert not kube.exists("csidriver", DRIVER_NAME)
    wait_for("kubelet to unregister the driver", lambda: not csinode_has_driver(kube, live.node_name), 120)
    if kube.exists("namespace", NAMESPACE):
        wait_for(
            "the operator's objects gone", lambda: not kube.get("deployments", "", NAMESPACE)["items"], 120
        )
        assert not install_plans(kube), "InstallPlans left"
        assert not kube.get("csv", "", NAMESPACE)["items"], "CSVs left"
    kinds = "deployments,daemonsets,services,serviceaccounts,roles,rolebindings,secrets,configmaps"
    for label in (MANAGED_BY, OLM_LABEL):
        assert not kube.run("get", kinds, "-A", "-l", label, "-o", "name").strip(), (
            f"objects labelled {label}"
        )
        cluster = kube.run(
            "get", "clusterroles,clusterrolebindings,csidrivers", "-l", label, "-o", "name"
        ).strip()
        assert not cluster, f"cluster objects labelled {label}: {cluster}"


def test_removal_waits_while_pods_use_the_driver(live: Live, app: App) -> None:
    kube = live.kube
    assert daemonset_ready(kube) and app.read()
    kube.delete("clustercsidriver", CR_NAME, wait=False)

    def waiting() -> bool:
        progressing = _conditions(kube).get("Progressing", {})
        return progressing.get("reason") == "WaitingForPods" and app.name in progressing.get("message", "")

    wait_for("the CR to say which pods it waits for", waiting, 120, interval=2)
    events = kube.run("get", "events", "-A", "--field-selector", "reason=WaitingForPods", "-o", "json")
    assert any(app.name in e["message"] for e in json.loads(events)["items"])
    sleep_checking(15, lambda: daemonset_ready(kube) and app.read() in ("secret", "rotated"))

    kube.run("delete", "namespace", app.namespace, "--timeout=120s", timeout=150)
    wait_for(
        "the ClusterCSIDriver to go once the pods are gone",
        lambda: not kube.exists("clustercsidriver", CR_NAME),
        180,
    )
    wait_for("the driver's objects gone", lambda: not any(rendered_objects(kube).values()), 120, interval=2)


def test_documented_order_leaves_nothing(live: Live) -> None:
    kube = live.kube
    if kube.exists("clustercsidriver", CR_NAME):
        kube.delete("clustercsidriver", CR_NAME)
    _remove_operator(kube)
    for crd in CRDS:
        kube.delete("crd", crd)
    _nothing_left(live, crds_deleted=True)
    # OLM keeps its Operator object (it lists what is left of the install); with nothing left its
    # components are empty, and the documented last step deletes it for good.
    operator = f"{PACKAGE}.{NAMESPACE}"
    wait_for(
        "OLM's Operator object to list no component",
        lambda: (
            not kube.get("operators.operators.coreos.com", operator)
            .get("status", {})
            .get("components", {})
            .get("refs")
        ),
        120,
        interval=2,
    )
    kube.run("delete", "operators.operators.coreos.com", operator)
    sleep_checking(10, lambda: not kube.exists("operators.operators.coreos.com", operator))


def test_operator_removed_first_then_one_command(live: Live) -> None:
    kube = live.kube
    _install(live)
    _remove_operator(kube)
    wait_for("the operator to go", lambda: not kube.get("deployments", "", NAMESPACE)["items"], 120)
    assert daemonset_ready(kube), "removing the operator does not remove the driver"
    kube.delete("clustercsidriver", CR_NAME, wait=False)
    sleep_checking(
        10, lambda: kube.exists("clustercsidriver", CR_NAME)
    )  # Terminating: nobody runs its finalizer
    kube.run(*DOCUMENTED_RELEASE)
    _nothing_left(live)


def test_operator_killed_during_removal(live: Live) -> None:
    kube = live.kube
    _install(live)
    kube.delete("clustercsidriver", CR_NAME, wait=False)
    sigkill_container(kube, "app.kubernetes.io/name=secrets-store-csi-operator")
    wait_for(
        "the restarted operator to finish the removal",
        lambda: not kube.exists("clustercsidriver", CR_NAME),
        240,
    )
    _remove_operator(kube)
    _nothing_left(live)


def test_namespace_deleted_with_everything(live: Live) -> None:
    kube = live.kube
    _install(live)
    kube.run("delete", "namespace", NAMESPACE, "--timeout=300s", timeout=330)
    assert not kube.exists("namespace", NAMESPACE)
    kube.delete("clustercsidriver", CR_NAME, wait=False)
    kube.run(*DOCUMENTED_RELEASE)
    _nothing_left(live)
    # What an admin removes last, as documented: the catalog.
    kube.delete("catalogsource", CATALOG, OLM_NS)
