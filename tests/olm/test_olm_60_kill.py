"""Scenario 6 (install): the operator is SIGKILLed while it takes over / installs the driver.

Removing the operator (Subscription and CSV) leaves the driver running for its pods; a new
Subscription reinstalls the operator, which is SIGKILLed (from the host, like the OOM killer) as
soon as it runs, while it reconciles. OLM and kubelet restart it; afterwards exactly one of each
rendered object exists, the same ones as before, and the application keeps reading and rotating.
(The kill during an upgrade is in test_olm_50_upgrade.)
"""

from __future__ import annotations

import pytest
from node.nodekit import wait_for
from olmkit import (
    CR_NAME,
    NAMESPACE,
    OPERATOR_DEPLOYMENT,
    SUBSCRIPTION,
    App,
    Live,
    daemonset_ready,
    deployment_available,
    installed_csv,
    rendered_objects,
    restarts,
    sigkill_container,
    subscription,
    wait_csv_succeeded,
)

OPERATOR_PODS = f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}"


def test_operator_killed_during_install_converges(live: Live, app: App) -> None:
    kube = live.kube
    csv = installed_csv(kube)
    if not csv:
        pytest.skip("needs the installation of scenario 2")
    before = rendered_objects(kube)
    assert before["daemonsets"] and before["csidrivers"]

    # Removing the operator does not remove the driver.
    kube.delete("subscription", SUBSCRIPTION, NAMESPACE)
    kube.delete("csv", csv, NAMESPACE)
    wait_for("the operator to go", lambda: not kube.pods(NAMESPACE, OPERATOR_PODS), 120)
    assert daemonset_ready(kube) and kube.exists("clustercsidriver", CR_NAME)
    assert rendered_objects(kube) == before
    assert app.read() in ("secret", "rotated")

    kube.apply(subscription())
    wait_for(
        "the reinstalled operator's container running",
        lambda: any(
            (cs.get("state") or {}).get("running")
            for p in kube.pods(NAMESPACE, OPERATOR_PODS)
            for cs in p["status"].get("containerStatuses") or []
        ),
        300,
        interval=0.5,
    )
    sigkill_container(kube, OPERATOR_PODS)
    wait_for("kubelet to restart the killed operator", lambda: restarts(kube, OPERATOR_PODS) >= 1, 120)
    new_csv = wait_for("the Subscription's installedCSV", lambda: installed_csv(kube), 300, interval=2)
    wait_csv_succeeded(kube, new_csv)
    wait_for(
        "the operator available", lambda: deployment_available(kube, OPERATOR_DEPLOYMENT, NAMESPACE), 180
    )
    wait_for("the driver ready", lambda: daemonset_ready(kube), 180)
    deployments = kube.get("deployments", "", NAMESPACE)["items"]
    assert [d["metadata"]["name"] for d in deployments] == [OPERATOR_DEPLOYMENT]
    assert rendered_objects(kube) == before, "exactly the same rendered objects, none twice"
    wait_for("the CR Available again", lambda: _available(live), 120)
    app.rotate(True)
    wait_for("rotation after the kill", lambda: app.read() == "rotated", 120, interval=2)


def _available(live: Live) -> bool:
    conditions = live.kube.get("clustercsidriver", CR_NAME).get("status", {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)
