"""`kubectl secrets-store doctor` and `status` on the real node: a healthy pod, then each link broken
on purpose (missing SPC, wrong provider name, provider not running, driver not on the node, CR
Removed) and diagnosed with the right verdict; a namespace user gets "could not check" verdicts.

The plugin runs the way a user runs it: the real kubectl finds `kubectl-secrets_store` on PATH.
Every change to the shared installation (the ClusterCSIDriver) is undone before the test ends.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nodekit import (
    DRIVER_NAME,
    KUBE_BIN,
    NODE_NAME,
    REPO,
    Kube,
    app_pod_spec,
    spc,
    wait_for,
    wait_pod_ready,
)
from nodesetup import DRIVER_APP as DRIVER_DAEMONSET
from nodesetup import OPERATOR_NAMESPACE as DRIVER_NAMESPACE
from nodesetup import Installation, cluster_csi_driver, driver_installed

# Where the healthy run's text output is kept (README "When something goes wrong" quotes it).
CAPTURE = Path(os.environ.get("SSCSI_DOCTOR_CAPTURE", "/tmp/sscsi-doctor"))
SYNC_SECRET = "doctor-synced"


def _env(kubeconfig: Path) -> dict[str, str]:
    venv_bin = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
    path = f"{venv_bin}:{KUBE_BIN}:{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "KUBECONFIG": str(kubeconfig)}


def plugin(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl secrets-store ARGS` as a user runs it."""
    return subprocess.run(
        [str(KUBE_BIN / "kubectl"), "secrets-store", *args],
        env=_env(kubeconfig),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def doctor(kubeconfig: Path, pod: str, ns: str) -> tuple[int, dict[str, Any]]:
    r = plugin(kubeconfig, "doctor", pod, "-n", ns, "-o", "json")
    assert r.stdout, f"exit {r.returncode}, no output; stderr: {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def links(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Link name -> link; a volume's links are prefixed with the volume name."""
    out = {}
    for section in report["sections"]:
        prefix = f"{section['volume']}: " if "volume" in section else ""
        for link in section["links"]:
            out[prefix + link["link"]] = link
    return out


def wait_verdict(
    kubeconfig: Path, pod: str, ns: str, link: str, reason: str, evidence: str = ""
) -> tuple[int, dict[str, Any]]:
    """Doctor until `link` has `reason` (and `evidence` in its evidence): kubelet's events and the
    controllers take a few seconds."""
    seen: dict[str, Any] = {}

    def diagnosed() -> bool:
        code, report = doctor(kubeconfig, pod, ns)
        seen.update(code=code, report=report)
        got = links(report).get(link, {})
        return got.get("reason") == reason and evidence in " ".join(got.get("evidence", []))

    try:
        wait_for(f"doctor to report {link}: {reason}", diagnosed, 150, interval=3)
    except AssertionError as err:
        raise AssertionError(f"{err}\nlast report: {json.dumps(seen.get('report'), indent=1)}") from None
    return seen["code"], seen["report"]


def _pod(kube: Kube, ns: str, name: str, spc_name: str, *, wait: bool = False) -> None:
    spec = app_pod_spec([("secrets-store-inline", spc_name, "/mnt/secrets-store")])
    kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}, ns)
    if wait:
        wait_pod_ready(kube, name, ns, timeout=180)


@pytest.fixture
def cr_restored(installation: Installation) -> Iterator[dict[str, Any]]:
    """The tier's ClusterCSIDriver to change; put back (and the driver serving) afterwards."""
    kube = installation.kube
    yield cluster_csi_driver()
    kube.apply(cluster_csi_driver())
    wait_for("the driver serving again", lambda: driver_installed(kube), 300, interval=2)


def test_healthy_pod_every_link_ok(installation: Installation, ns: str) -> None:
    kube = installation.kube
    secret_objects = [
        {"secretName": SYNC_SECRET, "type": "Opaque", "data": [{"objectName": "foo", "key": "username"}]}
    ]
    kube.apply(spc("doctor-spc", secret_objects=secret_objects), ns)
    _pod(kube, ns, "healthy", "doctor-spc", wait=True)
    wait_for("the synced Secret", lambda: kube.exists("secret", SYNC_SECRET, ns), 60)

    code, report = wait_verdict(
        kube.kubeconfig, "healthy", ns, "secrets-store-inline: synced Secrets", "AsExpected"
    )
    assert code == 0, json.dumps(report, indent=1)
    assert report["verdict"] == "ok"
    got = links(report)
    assert all(link["verdict"] == "ok" for link in got.values()), json.dumps(got, indent=1)
    assert "e2e-provider.sock" in got["secrets-store-inline: provider on the node"]["evidence"][0]
    assert any(
        "foo@v1" in e for e in got["secrets-store-inline: mount (SecretProviderClassPodStatus)"]["evidence"]
    )
    assert any(SYNC_SECRET in e for e in got["secrets-store-inline: synced Secrets"]["evidence"])

    text = plugin(kube.kubeconfig, "doctor", "healthy", "-n", ns)
    assert text.returncode == 0 and "BROKEN" not in text.stdout, text.stdout
    status = plugin(kube.kubeconfig, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    row = json.loads(plugin(kube.kubeconfig, "status", "-o", "json").stdout)["nodes"][0]
    assert row["driver"] == "ready" and row["registered"] == "yes", row
    assert "e2e-provider" in row["providers"] and int(row["volumes"]) >= 1, row
    CAPTURE.mkdir(parents=True, exist_ok=True)
    (CAPTURE / "doctor-healthy.txt").write_text(text.stdout)
    (CAPTURE / "status.txt").write_text(status.stdout)
    if os.environ.get("SSCSI_DOCTOR_RECORD"):
        _record(kube, ns, "healthy", "doctor-spc", Path(os.environ["SSCSI_DOCTOR_RECORD"]))


def test_missing_spc(installation: Installation, ns: str) -> None:
    kube = installation.kube
    _pod(kube, ns, "no-spc", "not-there")
    code, report = wait_verdict(
        kube.kubeconfig,
        "no-spc",
        ns,
        "secrets-store-inline: SecretProviderClass",
        "SecretProviderClassNotFound",
    )
    assert code == 1
    got = links(report)
    assert got["driver on the node"]["verdict"] == "ok"
    assert "not-there" in got["secrets-store-inline: SecretProviderClass"]["evidence"][0]
    assert got["secrets-store-inline: events"]["reason"] == "MountFailing"
    (CAPTURE / "doctor-missing-spc.txt").write_text(
        plugin(kube.kubeconfig, "doctor", "no-spc", "-n", ns).stdout
    )


def test_wrong_provider_name(installation: Installation, ns: str) -> None:
    kube = installation.kube
    kube.apply(spc("typo", provider="e2e-provder"), ns)
    _pod(kube, ns, "typo", "typo")
    code, report = wait_verdict(
        kube.kubeconfig, "typo", ns, "secrets-store-inline: provider on the node", "ProviderNotFound"
    )
    assert code == 1
    link = links(report)["secrets-store-inline: provider on the node"]
    assert "e2e-provder.sock" in link["evidence"][0] and "e2e-provider" in link["evidence"][0], link
    assert "e2e-provider" in link["fix"]
    assert "secrets-store-csi-driver-node" not in link["evidence"][0], "the driver is no provider"
    (CAPTURE / "doctor-wrong-provider.txt").write_text(
        plugin(kube.kubeconfig, "doctor", "typo", "-n", ns).stdout
    )
    assert links(report)["secrets-store-inline: SecretProviderClass"]["verdict"] == "ok"


def test_provider_not_running(installation: Installation, ns: str) -> None:
    """A provider DaemonSet whose pod on the node cannot start (its image is not on the node)."""
    kube = installation.kube
    labels = {"app": "doctor-provider"}
    container = {
        "name": "provider",
        "image": "localhost/sscsi/not-built:none",
        "imagePullPolicy": "Never",
        "args": ["--endpoint=unix:///provider/doctor-provider.sock"],
        "volumeMounts": [{"name": "providers", "mountPath": "/provider"}],
    }
    providers = {"name": "providers", "hostPath": {"path": "/var/run/secrets-store-csi-providers"}}
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "doctor-provider", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [container],
                        "volumes": [providers],
                        "tolerations": [{"operator": "Exists"}],
                    },
                },
            },
        },
        ns,
    )
    kube.apply(spc("needs-provider", provider="doctor-provider"), ns)
    _pod(kube, ns, "waits", "needs-provider")
    code, report = wait_verdict(
        kube.kubeconfig,
        "waits",
        ns,
        "secrets-store-inline: provider on the node",
        "ProviderNotReady",
        "ErrImageNeverPull",
    )
    assert code == 1
    evidence = links(report)["secrets-store-inline: provider on the node"]["evidence"][0]
    assert f"{ns}/doctor-provider-" in evidence and "ErrImageNeverPull" in evidence, evidence


def test_driver_not_on_the_node(installation: Installation, ns: str, cr_restored: dict[str, Any]) -> None:
    kube = installation.kube
    away = cr_restored
    store = away["spec"]["driverConfig"]["secretsStore"]
    store["nodePlacement"] = {"nodeSelector": {"sscsi-doctor": "elsewhere"}}
    kube.apply(away)
    wait_for(
        "the driver pod to leave the node",
        lambda: not kube.pods(DRIVER_NAMESPACE, f"app={DRIVER_DAEMONSET}"),
        180,
    )
    kube.apply(spc("doctor-spc"), ns)
    _pod(kube, ns, "no-driver", "doctor-spc")
    code, report = wait_verdict(kube.kubeconfig, "no-driver", ns, "driver on the node", "DriverNotOnNode")
    assert code == 1
    link = links(report)["driver on the node"]
    assert any("sscsi-doctor=elsewhere" in e for e in link["evidence"]), link
    assert "nodePlacement" in link["fix"]
    (CAPTURE / "doctor-no-driver.txt").write_text(
        plugin(kube.kubeconfig, "doctor", "no-driver", "-n", ns).stdout
    )


def test_cr_removed(installation: Installation, ns: str, cr_restored: dict[str, Any]) -> None:
    kube = installation.kube
    removed = cr_restored
    removed["spec"]["managementState"] = "Removed"
    kube.apply(removed)
    wait_for("the CSIDriver to go", lambda: not kube.exists("csidriver", DRIVER_NAME), 180)
    kube.apply(spc("doctor-spc"), ns)
    _pod(kube, ns, "removed", "doctor-spc")
    code, report = wait_verdict(kube.kubeconfig, "removed", ns, "ClusterCSIDriver", "ManagementStateRemoved")
    assert code == 1
    got = links(report)
    assert got["CSIDriver"]["reason"] == "CSIDriverMissing"
    assert "managementState" in got["CSIDriver"]["fix"], got["CSIDriver"]
    assert got["driver on the node"]["verdict"] == "broken"


def _user_kubeconfig(kube: Kube, ns: str, directory: Path) -> Path:
    """A namespace admin (ClusterRole admin bound in `ns` only), by a ServiceAccount token."""
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ns-user"}}, ns)
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "ns-user-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "ns-user", "namespace": ns}],
        },
        ns,
    )
    token = kube.run("create", "token", "ns-user", "-n", ns, "--duration=10m").strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        ca = Path(cluster["certificate-authority"])
        ca = ca if ca.is_absolute() else kube.kubeconfig.parent / ca
        cluster = {
            "server": cluster["server"],
            "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "node", "cluster": cluster}],
        "users": [{"name": "ns-user", "user": {"token": token}}],
        "contexts": [{"name": "ns-user", "context": {"cluster": "node", "user": "ns-user", "namespace": ns}}],
        "current-context": "ns-user",
    }
    path = directory / "ns-user.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_namespace_user_gets_could_not_check(installation: Installation, ns: str, tmp_path: Path) -> None:
    kube = installation.kube
    kube.apply(spc("doctor-spc"), ns)
    _pod(kube, ns, "mine", "doctor-spc", wait=True)
    user = _user_kubeconfig(kube, ns, tmp_path)
    code, report = wait_verdict(
        user, "mine", ns, "secrets-store-inline: mount (SecretProviderClassPodStatus)", "AsExpected"
    )
    assert code == 3, json.dumps(report, indent=1)
    got = links(report)
    for name in ("ClusterCSIDriver", "CSIDriver", "CSINode registration", "driver on the node"):
        assert got[name]["verdict"] == "unknown", got[name]
        assert got[name]["evidence"][0].startswith("could not check: RBAC forbids "), got[name]
    for name in (
        "SecretProviderClass",
        "mount (SecretProviderClassPodStatus)",
        "events",
        "provider on the node",
    ):
        assert got[f"secrets-store-inline: {name}"]["verdict"] == "ok", got
    text = plugin(user, "doctor", "mine")  # -n from the context, as kubectl
    assert text.returncode == 3 and "Traceback" not in text.stderr, text.stderr
    status = plugin(user, "status")
    assert status.returncode == 3 and "Traceback" not in status.stderr, status.stdout + status.stderr
    (CAPTURE / "doctor-namespace-user.txt").write_text(text.stdout)


def _record(kube: Kube, ns: str, pod: str, spc_name: str, out: Path) -> None:
    """The objects doctor read, for tests/unit/sscsi_cli/recorded (Secret values dropped)."""
    objects: list[dict[str, Any]] = []

    def add(doc: dict[str, Any], kind: str, api_version: str) -> None:
        for item in doc.get("items", [doc]):
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
            item["metadata"].pop("managedFields", None)
            if kind == "Secret":
                item["data"] = dict.fromkeys(item.get("data") or {}, "")
            objects.append(item)

    add(kube.get("pod", pod, ns), "Pod", "v1")
    add(kube.get("events", "", ns), "Event", "v1")
    add(kube.get("secretproviderclass", spc_name, ns), "SecretProviderClass", "secrets-store.csi.x-k8s.io/v1")
    add(
        kube.get("secretproviderclasspodstatuses", "", ns),
        "SecretProviderClassPodStatus",
        "secrets-store.csi.x-k8s.io/v1",
    )
    add(kube.get("secret", SYNC_SECRET, ns), "Secret", "v1")
    add(kube.get("pods", "", None, "-A", f"--field-selector=spec.nodeName={NODE_NAME}"), "Pod", "v1")
    add(kube.get("node", NODE_NAME), "Node", "v1")
    add(kube.get("csinode", NODE_NAME), "CSINode", "storage.k8s.io/v1")
    add(kube.get("csidriver", DRIVER_NAME), "CSIDriver", "storage.k8s.io/v1")
    add(
        kube.get("clustercsidriver", DRIVER_NAME),
        "ClusterCSIDriver",
        "operator.secrets-store.csi.x-k8s.io/v1",
    )
    add(kube.get("daemonset", DRIVER_DAEMONSET, DRIVER_NAMESPACE), "DaemonSet", "apps/v1")
    add(kube.get("deployment", "secrets-store-csi-operator", DRIVER_NAMESPACE), "Deployment", "apps/v1")
    driver = kube.pods(DRIVER_NAMESPACE, f"app={DRIVER_DAEMONSET}")[0]["metadata"]["name"]
    metrics = kube.run(
        "get", "--raw", f"/api/v1/namespaces/{DRIVER_NAMESPACE}/pods/{driver}:8095/proxy/metrics"
    )
    about = {
        "namespace": ns,
        "pod": pod,
        "node": NODE_NAME,
        "spc": spc_name,
        "secret": SYNC_SECRET,
        "driverPod": driver,
    }
    out.mkdir(parents=True, exist_ok=True)
    doc = {"about": about, "objects": objects, "metrics": {driver: metrics}}
    (out / "healthy.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
