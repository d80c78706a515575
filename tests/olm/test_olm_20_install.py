"""Scenario 2: install from the catalog: Manual approval first (nothing happens until approved),
then the documented Automatic Subscription; the operator runs under the CSV's ServiceAccount with
the CSV's RBAC only."""

from __future__ import annotations

from typing import Any

from node.nodekit import Kube, wait_for
from olmkit import (
    CATALOG,
    NAMESPACE,
    OPERATOR_DEPLOYMENT,
    SUBSCRIPTION,
    Live,
    catalog_ready,
    csv_phase,
    deployment_available,
    install_plans,
    installed_csv,
    namespace_and_group,
    sleep_checking,
    subscription,
    wait_csv_succeeded,
)


def _pending_plan(kube: Kube) -> dict[str, Any] | None:
    for plan in install_plans(kube):
        if plan.get("status", {}).get("phase") == "RequiresApproval" and not plan["spec"]["approved"]:
            return plan
    return None


def _uninstall_operator(kube: Kube, csv: str) -> None:
    kube.delete("subscription", SUBSCRIPTION, NAMESPACE)
    kube.delete("csv", csv, NAMESPACE)
    wait_for(
        "the operator Deployment to go",
        lambda: not kube.exists("deployment", OPERATOR_DEPLOYMENT, NAMESPACE),
        120,
    )
    # InstallPlans belong to the Subscription: garbage-collected with it.
    wait_for("the InstallPlans to go", lambda: not install_plans(kube), 120)


def test_manual_approval_installs_nothing_until_approved(live: Live) -> None:
    kube = live.kube
    assert catalog_ready(kube, CATALOG)
    kube.apply(namespace_and_group())
    kube.apply(subscription(approval="Manual"))
    plan = wait_for("an InstallPlan waiting for approval", lambda: _pending_plan(kube), 300, interval=2)
    csv = plan["spec"]["clusterServiceVersionNames"][0]

    def nothing_installed() -> bool:
        return not kube.exists("csv", csv, NAMESPACE) and not kube.exists(
            "deployment", OPERATOR_DEPLOYMENT, NAMESPACE
        )

    sleep_checking(20, nothing_installed)
    assert (
        kube.get("installplan", plan["metadata"]["name"], NAMESPACE)["status"]["phase"] == "RequiresApproval"
    )

    kube.run(
        "patch",
        "installplan",
        plan["metadata"]["name"],
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec":{"approved":true}}',
    )
    wait_csv_succeeded(kube, csv)
    assert deployment_available(kube, OPERATOR_DEPLOYMENT, NAMESPACE)
    _uninstall_operator(kube, csv)


def test_automatic_subscription_installs_the_operator(live: Live) -> None:
    kube = live.kube
    kube.apply(namespace_and_group())
    kube.apply(subscription(approval="Automatic"))
    csv = wait_for("the Subscription's installedCSV", lambda: installed_csv(kube), 300, interval=2)
    wait_csv_succeeded(kube, csv)
    plans = install_plans(kube)
    assert plans and all(p["status"]["phase"] == "Complete" for p in plans), [
        p["status"]["phase"] for p in plans
    ]
    assert any(csv in p["spec"]["clusterServiceVersionNames"] for p in plans)
    wait_for(
        "the operator Deployment available",
        lambda: deployment_available(kube, OPERATOR_DEPLOYMENT, NAMESPACE),
        180,
    )

    # The operator runs under the CSV's ServiceAccount, and that account holds the CSV's RBAC only.
    spec = kube.get("csv", csv, NAMESPACE)["spec"]["install"]["spec"]
    sa = spec["deployments"][0]["spec"]["template"]["spec"]["serviceAccountName"]
    pods = kube.pods(NAMESPACE, f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}")
    assert pods and all(p["spec"]["serviceAccountName"] == sa for p in pods)
    subject = f"system:serviceaccount:{NAMESPACE}:{sa}"
    bindings = [
        b
        for kind in ("clusterrolebindings", "rolebindings")
        for b in kube.get(kind, "", None, "-A")["items"]
        if any(
            s.get("kind") == "ServiceAccount" and s.get("name") == sa and s.get("namespace") == NAMESPACE
            for s in b.get("subjects") or []
        )
    ]
    assert bindings
    # OLM also lets every operator update its own OperatorCondition (a Role owned by that object).
    condition_bindings = [
        b
        for b in bindings
        if any(
            r.get("kind") == "OperatorCondition" and r.get("name") == csv
            for r in b["metadata"].get("ownerReferences", [])
        )
    ]
    bindings = [b for b in bindings if b not in condition_bindings]
    for b in bindings:
        labels = b["metadata"].get("labels", {})
        assert labels.get("olm.owner") == csv or any(
            r.get("kind") == "ClusterServiceVersion" for r in b["metadata"].get("ownerReferences", [])
        ), f"{b['kind']} {b['metadata']['name']} was not created by OLM from the CSV"

    # The roles bound are exactly the CSV's rules. Under an AllNamespaces OperatorGroup OLM lifts the
    # CSV's namespaced `permissions` into a ClusterRole too (the operator watches all namespaces), so
    # the namespaced rules hold cluster-wide: the least-privilege table in docs/install-olm.md says so.
    def flat(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (g, r, v)
            for rule in rules
            for g in rule.get("apiGroups", [""])
            for r in rule.get("resources", [])
            for v in rule.get("verbs", [])
        }

    granted: set[tuple[str, str, str]] = set()
    for b in bindings:
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        granted |= flat(kube.get(ref["kind"].lower(), ref["name"], ns).get("rules") or [])
    declared = flat(
        [r for p in spec.get("clusterPermissions", []) + spec.get("permissions", []) for r in p["rules"]]
    )
    # ... and, for AllNamespaces, read access to namespaces (OLM adds it to the lifted ClusterRole).
    olm_added = {("", "namespaces", v) for v in ("get", "list", "watch")}
    assert granted - olm_added == declared, (
        f"beyond the CSV: {granted - declared}; missing: {declared - granted}"
    )

    def can(verb: str, resource: str, namespace: str | None = None) -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={subject}"]
        if namespace:
            args += ["-n", namespace]
        return kube.run(*args, check=False).strip() == "yes"

    assert can("patch", "clustercsidrivers.operator.secrets-store.csi.x-k8s.io")
    assert can("create", "daemonsets.apps", NAMESPACE)
    assert can("create", "csidrivers.storage.k8s.io")
    assert not can("create", "namespaces")
    assert not can("delete", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can("list", "nodes")
    assert not can("create", "pods", NAMESPACE)
    assert csv_phase(kube, csv) == "Succeeded"
