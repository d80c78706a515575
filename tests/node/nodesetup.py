"""What the real-node tier installs on the node, and how to tell it is there.

The session's `operator_installed` fixture (conftest.py) puts the operator on the node as the bundle's CSV
deploys it, plus the reference provider and upstream's e2e provider; each test's `installation` fixture
makes sure a ClusterCSIDriver has the driver registered with kubelet (`install_driver`), so any test
module runs alone, in any order, and after the uninstall tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml
from nodekit import CLUSTER_DIR, DRIVER_NAME, NODE_NAME, REPO, Kube, KubectlError, http_get, wait_for

OPERATOR_NAMESPACE = "secrets-store-csi-driver"
OPERATOR_SA = "secrets-store-csi-operator"
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
KOPF_USER_WORKAROUND = os.environ.get("SSCSI_NODE_KOPF_USER_WORKAROUND", "0") == "1"


def _csv_deployment(images: dict[str, str]) -> dict[str, Any]:
    """The operator's Deployment exactly as the bundle's CSV declares it, images swapped."""
    csv_path = next((REPO / "bundle" / "manifests").glob("*.clusterserviceversion.yaml"))
    csv = yaml.safe_load(csv_path.read_text())
    dep = csv["spec"]["install"]["spec"]["deployments"][0]
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["image"] = images["operator"]
    overrides = {
        "DRIVER_IMAGE": images["driver"],
        "NODE_DRIVER_REGISTRAR_IMAGE": images["registrar"],
        "LIVENESS_PROBE_IMAGE": images["livenessprobe"],
    }
    for env in container.get("env", []):
        if env["name"] in overrides:
            env["value"] = overrides.pop(env["name"])
    container.setdefault("env", []).extend({"name": k, "value": v} for k, v in overrides.items())
    if KOPF_USER_WORKAROUND and not any(e["name"] in ("LOGNAME", "USER") for e in container["env"]):
        # The image runs as uid 65532, which has no passwd entry: kopf's default identity calls
        # getpass.getuser() and the operator crashes at start (KeyError: getpwuid). Remove once the
        # image (or main.py) handles it; SSCSI_NODE_KOPF_USER_WORKAROUND=0 shows the crash.
        container["env"].append({"name": "LOGNAME", "value": "secrets-store-csi-operator"})
    pod["serviceAccountName"] = OPERATOR_SA
    # kopf's in-cluster login dials https://kubernetes.default.svc: the node's CoreDNS resolves it
    # and kube-proxy routes the Service to the apiserver (hack/addons.sh), as on any cluster.
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": dep["name"], "namespace": OPERATOR_NAMESPACE, "labels": dep.get("label", {})},
        "spec": dep["spec"],
    }


def _operator_rbac() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE},
        }
    ]
    subject = [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}]
    for item in yaml.safe_load((REPO / "assets" / "operator" / "rbac.yaml").read_text())["items"]:
        name = item["metadata"]["name"]
        if item["kind"] == "ClusterRole":
            docs.append(item)
            docs.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": subject,
                }
            )
        elif item["kind"] == "Role":
            item["metadata"]["namespace"] = OPERATOR_NAMESPACE
            docs.append(item)
            docs.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": subject,
                }
            )
    return docs


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
    """The OLM tier installs the same operator on this cluster through a Subscription; its CSV owns
    the operator Deployment and would revert the images this tier sets. Start without it."""
    if not kube.exists("crd", "clusterserviceversions.operators.coreos.com"):
        return
    csvs = kube.run("get", "csv", "-n", OPERATOR_NAMESPACE, "-o", "name", "--ignore-not-found").split()
    if not csvs:
        return
    kube.run("delete", "subscription", "--all", "-n", OPERATOR_NAMESPACE, "--ignore-not-found", timeout=120)
    kube.run("delete", *csvs, "-n", OPERATOR_NAMESPACE, "--ignore-not-found", timeout=120)
    wait_for(
        "the OLM-owned operator Deployment to go",
        lambda: not kube.exists("deployment", "secrets-store-csi-operator", OPERATOR_NAMESPACE),
        120,
    )


def install_operator(kube: Kube, images: dict[str, str]) -> None:
    """The CRDs, the operator as the CSV deploys it (images swapped), both providers: rolled out."""
    _remove_olm_install(kube)
    for crd in [
        *sorted((REPO / "assets" / "crds").glob("*.yaml")),
        REPO / "assets" / "operator" / "operator.secrets-store.csi.x-k8s.io_clustercsidrivers.yaml",
    ]:
        kube.apply(crd.read_text())
    kube.run("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    kube.apply(_operator_rbac())
    kube.apply(_csv_deployment(images))
    kube.apply(_provider_daemonset(images["provider"]))
    kube.apply(_upstream_provider_daemonset(images["upstream-provider"]))
    rollouts = [
        (OPERATOR_NAMESPACE, "deployment/secrets-store-csi-operator", 180),
        (PROVIDER_NAMESPACE, f"daemonset/{PROVIDER_APP}", 120),
        (PROVIDER_NAMESPACE, f"daemonset/{UPSTREAM_PROVIDER_APP}", 120),
    ]
    for namespace, workload, seconds in rollouts:
        kube.run(
            "rollout", "status", "-n", namespace, workload, f"--timeout={seconds}s", timeout=seconds + 20
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
