"""Helpers of the OLM-live tier: OLM's objects, as an admin writes them, and waits on their status.

Everything goes through tests/node/nodekit.Kube against the real-node cluster: reads, applies and
deletes by the project's Kubernetes layer with kubectl's names, the rest by kubectl, so every step has
a kubectl equivalent an admin can replay. The manifests follow docs/install-olm.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.nodekit import (
    CLUSTER_DIR,
    DRIVER_NAME,
    HACK,
    REPO,
    Kube,
    KubectlError,
    app_pod_spec,
    http_get,
    spc,
    wait_for,
    wait_pod_ready,
)

OLM_NS = "olm"
NAMESPACE = "secrets-store-csi-driver"
PACKAGE = "secrets-store-csi-py"
CATALOG = "secrets-store-csi-py"
SUBSCRIPTION = "secrets-store-csi-py"
OPERATOR_DEPLOYMENT = "secrets-store-csi-operator"
OPERATOR_SA = "secrets-store-csi-operator"
DRIVER_DS = "secrets-store-csi-driver-node"
CR_NAME = DRIVER_NAME
MANAGED_BY = "app.kubernetes.io/managed-by=secrets-store-csi-operator"
PROVIDER_NS = "kube-system"
PROVIDER_APP = "csi-secrets-store-e2e-provider"
REGISTRY = os.environ.get("SSCSI_REGISTRY", "127.0.0.1:5000")
LOGS_DIR = CLUSTER_DIR / "logs"
ROTATION_SECONDS = 5
APP_NS = "olm-app"
MOUNT = "/mnt/secrets-store"


@dataclass
class Live:
    """The live cluster of the session: kubectl, the pushed images (hack/images.sh names), the node."""

    kube: Kube
    images: dict[str, str]
    node_name: str


@dataclass
class App:
    """An application pod reading its secrets through the driver (SPC of the reference provider)."""

    kube: Kube
    name: str = "app"
    namespace: str = APP_NS

    def start(self, busybox_image: str) -> None:
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        self.kube.apply(spc("e2e-provider", objects=("foo",)), self.namespace)
        pod_spec = app_pod_spec([("secrets", "e2e-provider", MOUNT)])
        container = pod_spec["containers"][0]
        container["image"] = busybox_image
        container["imagePullPolicy"] = "IfNotPresent"
        pod_spec.pop("dnsPolicy", None)
        self.kube.apply(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": self.name}, "spec": pod_spec},
            self.namespace,
        )
        wait_pod_ready(self.kube, self.name, self.namespace, timeout=180)

    def read(self, obj: str = "foo") -> str:
        return self.kube.exec(self.name, self.namespace, "cat", f"{MOUNT}/{obj}")

    def rotate(self, rotated: bool) -> None:
        """Change the secret in the store (the reference provider answers `rotated` instead of `secret`)."""
        pods = self.kube.pods(PROVIDER_NS, f"app={PROVIDER_APP}")
        assert pods, "no provider pod"
        http_get(
            f"http://{pods[0]['status']['podIP']}:8080/rotation?rotated={'true' if rotated else 'false'}"
        )

    def mounts(self) -> list[str]:
        """The driver's tmpfs mounts on the host for this pod's volumes."""
        uid = self.kube.get("pod", self.name, self.namespace)["metadata"]["uid"]
        root = f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/"
        return [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(root)
        ]


def run(cmd: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env={**os.environ, **(env or {})}
    )
    if r.returncode != 0:
        raise AssertionError(f"{what} failed ({r.returncode}):\n{r.stderr[-6000:]}")
    return r.stdout


def project_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in pyproject.toml")


def catalog_source(image: str, name: str = CATALOG) -> dict[str, Any]:
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "CatalogSource",
        "metadata": {"name": name, "namespace": OLM_NS},
        "spec": {
            "sourceType": "grpc",
            "image": image,
            "displayName": "Secrets Store CSI Driver (Python)",
            "publisher": "secrets-store-csi-py",
            "grpcPodConfig": {"securityContextConfig": "restricted"},
            "updateStrategy": {"registryPoll": {"interval": "30s"}},
        },
    }


def catalog_ready(kube: Kube, name: str = CATALOG) -> bool:
    cs = kube.get("catalogsource", name, OLM_NS)
    return (cs.get("status", {}).get("connectionState") or {}).get("lastObservedState") == "READY"


def namespace_and_group() -> list[dict[str, Any]]:
    privileged = {f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": privileged}},
        {
            "apiVersion": "operators.coreos.com/v1",
            "kind": "OperatorGroup",
            "metadata": {"name": PACKAGE, "namespace": NAMESPACE},
            "spec": {},
        },
    ]


def subscription(
    approval: str = "Automatic", channel: str = "stable", source: str = CATALOG
) -> dict[str, Any]:
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "Subscription",
        "metadata": {"name": SUBSCRIPTION, "namespace": NAMESPACE},
        "spec": {
            "name": PACKAGE,
            "channel": channel,
            "source": source,
            "sourceNamespace": OLM_NS,
            "installPlanApproval": approval,
        },
    }


def csv_phase(kube: Kube, name: str) -> str:
    if not kube.exists("csv", name, NAMESPACE):
        return ""
    return str(kube.get("csv", name, NAMESPACE).get("status", {}).get("phase", ""))


def installed_csv(kube: Kube) -> str:
    if not kube.exists("subscription", SUBSCRIPTION, NAMESPACE):
        return ""
    return str(kube.get("subscription", SUBSCRIPTION, NAMESPACE).get("status", {}).get("installedCSV", ""))


def wait_csv_succeeded(kube: Kube, name: str, timeout: float = 420) -> None:
    wait_for(f"CSV {name} Succeeded", lambda: csv_phase(kube, name) == "Succeeded", timeout, interval=2)


def install_plans(kube: Kube) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get("installplan", "", NAMESPACE)["items"]
    return items


def deployment_available(kube: Kube, name: str, namespace: str) -> bool:
    if not kube.exists("deployment", name, namespace):
        return False
    st = kube.get("deployment", name, namespace).get("status", {})
    return bool(st.get("availableReplicas")) and st.get("updatedReplicas") == st.get("replicas")


def daemonset_ready(kube: Kube, name: str = DRIVER_DS, namespace: str = NAMESPACE) -> bool:
    if not kube.exists("daemonset", name, namespace):
        return False
    st = kube.get("daemonset", name, namespace).get("status", {})
    want = st.get("desiredNumberScheduled", 0)
    return bool(want > 0 and st.get("numberReady", 0) == want and st.get("updatedNumberScheduled", 0) == want)


def csinode_has_driver(kube: Kube, node: str) -> bool:
    drivers = kube.get("csinode", node).get("spec", {}).get("drivers") or []
    return any(d["name"] == DRIVER_NAME for d in drivers)


def cluster_csi_driver(rotation_seconds: int = ROTATION_SECONDS) -> dict[str, Any]:
    return {
        "apiVersion": "operator.secrets-store.csi.x-k8s.io/v1",
        "kind": "ClusterCSIDriver",
        "metadata": {"name": CR_NAME},
        "spec": {
            "managementState": "Managed",
            "logLevel": "Normal",
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


def images(*names: str) -> dict[str, str]:
    """hack/images.sh names: the references the node pulls (public names, via the registry)."""
    out = run([str(HACK / "images.sh"), "names", *names], "hack/images.sh names", 60)
    result: dict[str, str] = json.loads(out)
    return result


def push_images(*names: str) -> dict[str, str]:
    out = run(
        [str(HACK / "images.sh"), "push", *names],
        "hack/images.sh push",
        2400,
        env={"SSCSI_REGISTRY": REGISTRY},
    )
    result: dict[str, str] = json.loads(out)
    return result


def retag_in_registry(source: str, target: str) -> None:
    """Make `target` (a public name) pull the same image as `source` (via the loopback registry)."""
    src = f"{REGISTRY}/{source.split('/', 1)[1]}"
    dst = f"{REGISTRY}/{target.split('/', 1)[1]}"
    run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src}",
            f"docker://{dst}",
        ],
        f"skopeo copy {src} {dst}",
        300,
    )


def save_logs(kube: Kube, namespaces: tuple[str, ...]) -> Path:
    out = LOGS_DIR / "olm-pods"
    out.mkdir(parents=True, exist_ok=True)
    for ns in namespaces:
        try:
            pods = kube.get("pods", "", ns)["items"]
        except KubectlError:
            continue
        for pod in pods:
            for c in pod["spec"]["containers"]:
                name = f"{ns}_{pod['metadata']['name']}_{c['name']}.log"
                (out / name).write_text(kube.logs(pod["metadata"]["name"], ns, c["name"]))
    return out


def gone(kube: Kube, kind: str, name: str, namespace: str | None = None) -> bool:
    return not kube.exists(kind, name, namespace)


def sleep_checking(seconds: float, check: Any, interval: float = 2.0) -> None:
    """Sleep `seconds`, asserting `check()` holds every `interval` (something must NOT happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), "the condition stopped holding while waiting"
        time.sleep(interval)


def provider_daemonset(image: str) -> dict[str, Any]:
    labels = {"app": PROVIDER_APP}
    container = {
        "name": "provider",
        "image": image,
        "args": ["--endpoint=unix:///provider/e2e-provider.sock", "--http-addr=:8080"],
        "ports": [{"name": "control", "containerPort": 8080}],
        "readinessProbe": {
            "exec": {"command": ["/bin/test", "-S", "/provider/e2e-provider.sock"]},
            "periodSeconds": 2,
        },
        "volumeMounts": [{"name": "providers", "mountPath": "/provider"}],
        # The image runs as non-root; the provider socket directory on the host is root's.
        "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False},
    }
    host = {"path": "/var/run/secrets-store-csi-providers", "type": "DirectoryOrCreate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": PROVIDER_APP, "namespace": PROVIDER_NS, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [{"name": "providers", "hostPath": host}],
                },
            },
        },
    }


RENDERED_KINDS = (
    ("daemonsets", NAMESPACE),
    ("services", NAMESPACE),
    ("serviceaccounts", NAMESPACE),
    ("csidrivers", None),
    ("clusterroles", None),
    ("clusterrolebindings", None),
)


def rendered_objects(kube: Kube) -> dict[str, list[str]]:
    """Every object the operator renders (labelled managed-by), by kind: names, duplicates kept."""
    out = {}
    for kind, ns in RENDERED_KINDS:
        args = ["get", kind, "-l", MANAGED_BY, "-o", "jsonpath={.items[*].metadata.name}"]
        if ns:
            args += ["-n", ns]
        out[kind] = sorted(kube.run(*args).split())
    return out


def sigkill_container(kube: Kube, selector: str, namespace: str = NAMESPACE) -> int:
    """SIGKILL the main process of the (first) matching pod's first container, from the host."""
    pods = [p for p in kube.pods(namespace, selector) if p["status"].get("containerStatuses")]
    assert pods, f"no started pod for {selector}"
    cid = pods[0]["status"]["containerStatuses"][0].get("containerID", "").split("://")[-1]
    assert cid, "the container has no ID yet"
    out = run(
        ["ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "tasks", "ls"],
        "ctr tasks ls",
        30,
    )
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            pid = int(fields[1])
            os.kill(pid, 9)
            return pid
    raise AssertionError(f"container {cid} has no running task")


def restarts(kube: Kube, selector: str, namespace: str = NAMESPACE) -> int:
    return sum(
        cs.get("restartCount", 0)
        for p in kube.pods(namespace, selector)
        for cs in p["status"].get("containerStatuses") or []
    )
