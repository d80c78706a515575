"""dist/install.yaml (the plain manifest `make bundle` writes for clusters without OLM) carries the
same operator as the CSV: its Deployment, its rules, its CRDs, its images; plus the namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from unit.bundle.files import MANIFESTS, ROOT, load_csv

INSTALL = ROOT / "dist" / "install.yaml"
NAMESPACE = "secrets-store-csi-driver"
OPERATOR = "secrets-store-csi-operator"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]


def _one(kind: str) -> dict[str, Any]:
    [found] = [d for d in _docs() if d["kind"] == kind]
    return found


def test_the_manifest_holds_exactly_the_operator_and_its_apis() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in _docs())
    crds = sorted(("CustomResourceDefinition", d["metadata"]["name"]) for d in _bundle_crds())
    others = [
        ("ClusterRole", OPERATOR),
        ("ClusterRoleBinding", OPERATOR),
        ("Deployment", OPERATOR),
        ("Namespace", NAMESPACE),
        ("Role", OPERATOR),
        ("RoleBinding", OPERATOR),
        ("ServiceAccount", OPERATOR),
    ]
    assert kinds == sorted(crds + others)


def test_deployment_is_the_csv_install_strategy() -> None:
    [strategy] = load_csv()["spec"]["install"]["spec"]["deployments"]
    deployment = _one("Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert strategy["name"] == deployment["metadata"]["name"]
    assert strategy["spec"] == deployment["spec"]


def test_rbac_is_the_csv_permissions() -> None:
    csv = load_csv()["spec"]["install"]["spec"]
    [cluster] = csv["clusterPermissions"]
    [local] = csv["permissions"]
    assert cluster["serviceAccountName"] == local["serviceAccountName"] == OPERATOR
    assert _one("ClusterRole")["rules"] == cluster["rules"]
    assert _one("Role")["rules"] == local["rules"]
    assert _one("Role")["metadata"]["namespace"] == NAMESPACE
    subject = {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    for kind, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = _one(kind)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": OPERATOR}
    assert _one("ServiceAccount")["metadata"]["namespace"] == NAMESPACE


def _bundle_crds() -> list[dict[str, Any]]:
    paths = sorted(Path(MANIFESTS).glob("*.yaml"))
    loaded = [yaml.safe_load(p.read_text()) for p in paths]
    return [d for d in loaded if d["kind"] == "CustomResourceDefinition"]


def test_crds_are_the_bundles() -> None:
    mine = {d["metadata"]["name"]: d["spec"] for d in _docs() if d["kind"] == "CustomResourceDefinition"}
    assert mine == {d["metadata"]["name"]: d["spec"] for d in _bundle_crds()}


def test_namespace_admits_the_privileged_node_plugin() -> None:
    labels = _one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_images_are_the_public_release_names() -> None:
    [container] = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    version = load_csv()["spec"]["version"]
    assert container["image"] == f"ghcr.io/secrets-store-csi-py/operator:v{version}"
    assert env["RELATED_IMAGE_DRIVER"] == f"ghcr.io/secrets-store-csi-py/driver:v{version}"
    assert all(not str(v).startswith("localhost") for v in env.values())
