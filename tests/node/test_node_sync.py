"""Sync to a Kubernetes Secret with real pods (upstream e2e-provider.bats 14-20)."""

from __future__ import annotations

from nodekit import Kube, app_pod_spec, deployment, deployment_ready, load_manifest, secret_env, wait_for
from nodesetup import OPERATOR_NAMESPACE, Installation

SYNC_SPC = "e2e-provider-sync"


def _sync_spc(kube: Kube, ns: str) -> None:
    kube.apply(load_manifest("spc-v1-e2e-provider-sync.yaml"), ns)


def _deploy(kube: Kube, ns: str, name: str, replicas: int) -> None:
    spec = app_pod_spec(
        [("secrets-store-inline", SYNC_SPC, "/mnt/secrets-store")],
        env=[secret_env("SECRET_USERNAME", "foosecret", "username")],
    )
    kube.apply(deployment(name, replicas, spec), ns)


def _owners(kube: Kube, ns: str) -> int:
    return len(kube.get("secret", "foosecret", ns)["metadata"].get("ownerReferences") or [])


def _check_pod(kube: Kube, ns: str, app: str) -> None:
    pod = kube.pods(ns, f"app={app}")[0]["metadata"]["name"]
    assert kube.exec(pod, ns, "cat", "/mnt/secrets-store/foo") == "secret"
    assert kube.exec(pod, ns, "sh", "-c", "echo $SECRET_USERNAME").strip() == "secret"


def _check_secret(kube: Kube, ns: str) -> None:
    assert kube.secret_data("foosecret", ns) == {"username": "secret"}
    labels = kube.get("secret", "foosecret", ns)["metadata"]["labels"]
    assert labels["environment"] == "test"
    assert labels["secrets-store.csi.k8s.io/managed"] == "true"


def test_sync_with_two_deployments_and_owner_lifecycle(installation: Installation, ns: str) -> None:
    kube = installation.kube
    _sync_spc(kube, ns)
    _deploy(kube, ns, "busybox-deployment", 2)
    _deploy(kube, ns, "busybox-deployment-2", 2)
    for name in ("busybox-deployment", "busybox-deployment-2"):
        wait_for(f"deployment {name} ready", lambda n=name: deployment_ready(kube, n, ns, 2), 180)
    _check_pod(kube, ns, "busybox-deployment")
    _check_secret(kube, ns)
    # One owner per ReplicaSet whose pods mount the SPC (upstream: "multiple owners").
    wait_for("2 owner references", lambda: _owners(kube, ns) == 2, 60)

    kube.delete("deployment", "busybox-deployment", ns)
    wait_for("1 owner reference after deleting a deployment", lambda: _owners(kube, ns) == 1, 120)
    kube.delete("deployment", "busybox-deployment-2", ns)
    wait_for("the synced Secret to be deleted", lambda: not kube.exists("secret", "foosecret", ns), 120)


def test_namespaced_spc(installation: Installation, ns: str) -> None:
    kube = installation.kube
    _sync_spc(kube, ns)
    _deploy(kube, ns, "busybox-deployment", 1)
    wait_for("deployment ready", lambda: deployment_ready(kube, "busybox-deployment", ns, 1), 180)
    _check_pod(kube, ns, "busybox-deployment")
    _check_secret(kube, ns)
    wait_for("1 owner reference", lambda: _owners(kube, ns) == 1, 60)
    kube.delete("deployment", "busybox-deployment", ns)
    wait_for("the synced Secret to be deleted", lambda: not kube.exists("secret", "foosecret", ns), 120)


def test_spc_in_another_namespace_fails_with_event(installation: Installation, ns: str) -> None:
    kube = installation.kube
    # The SPC exists, but only in the driver's namespace: pods never see other namespaces' SPCs.
    kube.apply(load_manifest("spc-v1-e2e-provider-sync.yaml"), OPERATOR_NAMESPACE)
    try:
        _deploy(kube, ns, "busybox-deployment", 1)
        pattern = f"failed to get secretproviderclass {ns}/{SYNC_SPC}"

        def failed_mount() -> bool:
            return any(
                e["reason"] == "FailedMount" and pattern in e["message"] and "not found" in e["message"]
                for e in kube.events(ns)
            )

        wait_for(f"a FailedMount event with '{pattern} ... not found'", failed_mount, 120)
    finally:
        kube.delete("secretproviderclass", SYNC_SPC, OPERATOR_NAMESPACE)
