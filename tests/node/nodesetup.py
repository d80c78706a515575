"""What the real-node tier installs on the node, and how to tell it is there.

The session's `operator_installed` fixture (conftest.py) puts the reference provider and upstream's e2e
provider on the node, and the operator the way a cluster without OLM installs it: one
`kubectl apply -f dist/install.yaml`, only its image references swapped for the node's (`install_manifest`).
Each test's `installation` fixture applies it again when an uninstall test deleted it, and makes sure a
ClusterCSIDriver has the driver registered with kubelet (`install_driver`), so any test module runs
alone, in any order, and after the uninstall tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from nodekit import CLUSTER_DIR, DRIVER_NAME, NODE_NAME, REPO, Kube, KubectlError, http_get, wait_for

OPERATOR_NAMESPACE = "secrets-store-csi-driver"
OPERATOR_DEPLOYMENT = "secrets-store-csi-operator"
INSTALL_MANIFEST = REPO / "dist" / "install.yaml"
PROVIDER_NAMESPACE = "kube-system"
PROVIDER_APP = "csi-secrets-store-e2e-provider"
# Upstream's own e2e provider (test/e2eprovider, built from its release source), on its own socket.
UPSTREAM_PROVIDER = "upstream-e2e-provider"
UPSTREAM_PROVIDER_APP = "csi-secrets-store-upstream-e2e-provider"
DRIVER_APP = "secrets-store-csi-driver-node"
CR_NAME = DRIVER_NAME
# secretRotation.custom.minimumRefreshAge: the driver's --rotation-poll-interval (seconds).
ROTATION_SECONDS = int(os.environ.get("SSCSI_NODE_ROTATION_SECONDS", "5"))
LOGS_DIR = CLUSTER_DIR / "logs"


# The operator's RELATED_IMAGE_* variables (the images it deploys the driver with) -> hack/images.sh names.
RELATED_IMAGES = {
    "RELATED_IMAGE_DRIVER": "driver",
    "RELATED_IMAGE_LIVENESSPROBE": "livenessprobe",
}


def manifest_objects() -> list[dict[str, Any]]:
    """The objects of dist/install.yaml, as `make bundle` wrote them."""
    return [d for d in yaml.safe_load_all(INSTALL_MANIFEST.read_text()) if d]


def install_manifest(images: dict[str, str]) -> list[dict[str, Any]]:
    """dist/install.yaml with only its image references swapped for the ones the node runs: the
    operator's container image and its RELATED_IMAGE_* values (the manifest's public names,
    ghcr.io/...:v<version>, are not the tags hack/images.sh gives this build)."""
    docs = manifest_objects()
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = images["operator"]
    related = {e["name"]: e for e in container["env"] if e["name"].startswith("RELATED_IMAGE_")}
    assert set(related) == set(RELATED_IMAGES), f"{INSTALL_MANIFEST}: RELATED_IMAGE_* are {sorted(related)}"
    for name, image in RELATED_IMAGES.items():
        related[name]["value"] = images[image]
    return docs


def write_install_manifest(images: dict[str, str]) -> Path:
    """The node's copy of dist/install.yaml (install_manifest), for `kubectl apply/delete -f`."""
    path = CLUSTER_DIR / "install.yaml"
    path.write_text(yaml.safe_dump_all(install_manifest(images), sort_keys=False))
    return path


def _provider_daemonset(image: str) -> dict[str, Any]:
    """The reference provider; its image runs as non-root, the root-owned hostPath needs uid 0."""
    ds = _provider_daemonset_base(PROVIDER_APP, image, "e2e-provider")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    container["args"].append("--http-addr=:8080")
    container["readinessProbe"] = {
        "exec": {"command": ["/bin/test", "-S", "/provider/e2e-provider.sock"]},
        "periodSeconds": 2,
    }
    return ds


def _upstream_provider_daemonset(image: str) -> dict[str, Any]:
    """Upstream's e2e provider as its installer runs it (its control endpoint is fixed at :8080)."""
    ds = _provider_daemonset_base(UPSTREAM_PROVIDER_APP, image, UPSTREAM_PROVIDER)
    container = ds["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 2}
    container["securityContext"].update({"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}})
    return ds


def _provider_daemonset_base(app: str, image: str, provider: str) -> dict[str, Any]:
    labels = {"app": app}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": app, "namespace": PROVIDER_NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": [{"operator": "Exists"}],
                    "dnsPolicy": "Default",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "provider",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": [f"--endpoint=unix:///provider/{provider}.sock"],
                            "ports": [{"name": "control", "containerPort": 8080}],
                            "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False},
                            "volumeMounts": [{"name": "providers", "mountPath": "/provider"}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "providers",
                            "hostPath": {
                                "path": "/var/run/secrets-store-csi-providers",
                                "type": "DirectoryOrCreate",
                            },
                        }
                    ],
                },
            },
        },
    }


def cluster_csi_driver(rotation_seconds: int = ROTATION_SECONDS) -> dict[str, Any]:
    return {
        "apiVersion": "operator.secrets-store.csi.x-k8s.io/v1",
        "kind": "ClusterCSIDriver",
        "metadata": {"name": CR_NAME},
        "spec": {
            "managementState": "Managed",
            "logLevel": "Debug",
            "operatorLogLevel": "Normal",
            "driverConfig": {
                "driverType": "SecretsStore",
                "secretsStore": {
                    "secretRotation": {"type": "Custom", "custom": {"minimumRefreshAge": rotation_seconds}},
                    "syncSecret": {"enabled": True},
                },
            },
        },
    }


def daemonset_ready(kube: Kube, name: str, namespace: str) -> bool:
    st = kube.get("daemonset", name, namespace).get("status", {})
    want = st.get("desiredNumberScheduled", 0)
    return want > 0 and st.get("numberReady", 0) == want and st.get("updatedNumberScheduled", 0) == want


def csinode_has_driver(kube: Kube) -> bool:
    drivers = kube.get("csinode", NODE_NAME).get("spec", {}).get("drivers") or []
    return any(d["name"] == DRIVER_NAME for d in drivers)


@dataclass
class Node:
    """The running node: its cluster, and the images hack/images.sh imported (name -> reference)."""

    kube: Kube
    images: dict[str, str]


@dataclass
class Installation:
    kube: Kube
    images: dict[str, str]

    def driver_pod(self) -> dict[str, Any]:
        pods = self.kube.pods(OPERATOR_NAMESPACE, f"app={DRIVER_APP}")
        assert pods, "no driver pod"
        return pods[0]

    def provider_pod(self, app: str = PROVIDER_APP) -> dict[str, Any]:
        pods = self.kube.pods(PROVIDER_NAMESPACE, f"app={app}")
        assert pods, f"no {app} pod"
        return pods[0]

    def driver_logs(self) -> str:
        return self.kube.logs(self.driver_pod()["metadata"]["name"], OPERATOR_NAMESPACE, "csi-driver")

    def provider_control(self, path: str, provider: str = "e2e-provider") -> str:
        """The control endpoint (/rotation?rotated=...) of the provider serving on <provider>.sock."""
        app = UPSTREAM_PROVIDER_APP if provider == UPSTREAM_PROVIDER else PROVIDER_APP
        return http_get(f"http://{self.provider_pod(app)['status']['podIP']}:8080{path}")

    def driver_container_logs(self, container: str) -> str:
        return self.kube.logs(self.driver_pod()["metadata"]["name"], OPERATOR_NAMESPACE, container)


def save_logs(kube: Kube) -> None:
    out = LOGS_DIR / "pods"
    out.mkdir(parents=True, exist_ok=True)
    for ns in (OPERATOR_NAMESPACE, PROVIDER_NAMESPACE):
        try:
            pods = kube.get("pods", "", ns)["items"]
        except AssertionError:
            continue
        for pod in pods:
            for c in pod["spec"]["containers"]:
                name = f"{ns}_{pod['metadata']['name']}_{c['name']}.log"
                (out / name).write_text(kube.logs(pod["metadata"]["name"], ns, c["name"]))


def _remove_olm_install(kube: Kube) -> None:
    """The OLM tier installs the same operator on this cluster through a Subscription; its CSV owns the
    operator's Deployment and ServiceAccount (same names as the manifest's) and would revert the images
    this tier sets. Start without it: once the CSV is deleted, OLM's objects go with it."""
    if not kube.exists("crd", "clusterserviceversions.operators.coreos.com"):
        return
    csvs = kube.run("get", "csv", "-n", OPERATOR_NAMESPACE, "-o", "name", "--ignore-not-found").split()
    if not csvs:
        return
    kube.run("delete", "subscription", "--all", "-n", OPERATOR_NAMESPACE, "--ignore-not-found", timeout=120)
    kube.run("delete", *csvs, "-n", OPERATOR_NAMESPACE, "--ignore-not-found", timeout=120)
    # Applied over OLM's, the manifest's Deployment and ServiceAccount would keep the CSV's ownerReference
    # and be garbage-collected: wait until OLM's are gone.
    for kind in ("deployment", "serviceaccount"):
        wait_for(
            f"the OLM-owned operator {kind} to go",
            lambda kind=kind: not kube.exists(kind, OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE),
            120,
        )


def _being_removed(kube: Kube, kind: str, name: str) -> bool:
    found = kube.get(kind, "", None, f"--field-selector=metadata.name={name}")["items"]
    return bool(found and found[0]["metadata"].get("deletionTimestamp"))


def operator_present(kube: Kube) -> bool:
    """The manifest's operator is there: its namespace (not being deleted), Deployment and CRDs."""
    crds = [d["metadata"]["name"] for d in manifest_objects() if d["kind"] == "CustomResourceDefinition"]
    return (
        kube.exists("namespace", OPERATOR_NAMESPACE)
        and not _being_removed(kube, "namespace", OPERATOR_NAMESPACE)
        and kube.exists("deployment", OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE)
        and all(kube.exists("crd", name) for name in crds)
    )


def install_operator(kube: Kube, images: dict[str, str]) -> None:
    """One `kubectl apply -f` of dist/install.yaml (images swapped), the operator rolled out.

    An OLM install of the tier that shares this node is removed first; an uninstall that is still under
    way (the namespace or a CRD being deleted) is waited out, as an admin reinstalling would. kopf's
    in-cluster login dials https://kubernetes.default.svc: the node's CoreDNS resolves it and kube-proxy
    routes the Service to the apiserver (hack/addons.sh), as on any cluster.
    """
    _remove_olm_install(kube)
    for doc in manifest_objects():
        if doc["kind"] in ("Namespace", "CustomResourceDefinition"):
            kind, name = doc["kind"].lower(), doc["metadata"]["name"]
            wait_for(
                f"{kind} {name} being deleted to go",
                lambda kind=kind, name=name: not _being_removed(kube, kind, name),
                180,
            )
    kube.run("apply", "-f", str(write_install_manifest(images)), timeout=120)
    kube.run("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    kube.run(
        "rollout",
        "status",
        "-n",
        OPERATOR_NAMESPACE,
        f"deployment/{OPERATOR_DEPLOYMENT}",
        "--timeout=180s",
        timeout=200,
    )


def install_providers(kube: Kube, images: dict[str, str]) -> None:
    """Both providers as DaemonSets in kube-system, rolled out (an uninstall leaves them)."""
    kube.apply(_provider_daemonset(images["provider"]))
    kube.apply(_upstream_provider_daemonset(images["upstream-provider"]))
    for app in (PROVIDER_APP, UPSTREAM_PROVIDER_APP):
        kube.run(
            "rollout", "status", "-n", PROVIDER_NAMESPACE, f"daemonset/{app}", "--timeout=120s", timeout=140
        )


def _cluster_csi_driver(kube: Kube) -> dict[str, Any] | None:
    found = kube.get("clustercsidrivers", "", None, f"--field-selector=metadata.name={CR_NAME}")["items"]
    return found[0] if found else None


def _being_deleted(kube: Kube) -> bool:
    cr = _cluster_csi_driver(kube)
    return cr is not None and bool(cr["metadata"].get("deletionTimestamp"))


def driver_installed(kube: Kube) -> bool:
    """The ClusterCSIDriver is there (not being deleted), its DaemonSet Ready, kubelet has the driver."""
    cr = _cluster_csi_driver(kube)
    if cr is None or cr["metadata"].get("deletionTimestamp"):
        return False
    try:
        return daemonset_ready(kube, DRIVER_APP, OPERATOR_NAMESPACE) and csinode_has_driver(kube)
    except KubectlError:  # the DaemonSet is not there (yet)
        return False


def install_driver(kube: Kube) -> None:
    """Make sure the driver runs: a ClusterCSIDriver as the tier sets it, its DaemonSet Ready, registered.

    Cheap when it already does. A ClusterCSIDriver left being deleted (an uninstall test that failed
    midway) is waited out first, then created again.
    """
    if driver_installed(kube):
        return
    wait_for("a ClusterCSIDriver being deleted to go", lambda: not _being_deleted(kube), 180)
    kube.apply(cluster_csi_driver())
    wait_for("the driver DaemonSet Ready", lambda: daemonset_ready(kube, DRIVER_APP, OPERATOR_NAMESPACE), 240)
    wait_for("kubelet to register the driver (CSINode)", lambda: csinode_has_driver(kube), 120)
