"""Static checks of the CRDs in assets/crds and the e2e sample manifests.

A real API server validates these too (e2e); here we check the shape offline:
names, versions, deprecation, the fields upstream manifests use, that each
schema is structural, and that the samples only use fields the schema knows
(so nothing the driver relies on would be pruned).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "assets" / "crds"
MANIFEST_DIR = ROOT / "tests" / "e2e" / "manifests"
GROUP = "secrets-store.csi.x-k8s.io"
DEPRECATION_PREFIX = "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1"

SPC_FILE = CRD_DIR / f"{GROUP}_secretproviderclasses.yaml"
SPCPS_FILE = CRD_DIR / f"{GROUP}_secretproviderclasspodstatuses.yaml"


def _load_one(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected exactly one document"
    doc = docs[0]
    assert isinstance(doc, dict)
    return doc


def _versions(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in crd["spec"]["versions"]}


def _schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    schema = _versions(crd)[version]["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def _at(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    """Walk properties; "[]" steps into array items, "{}" into map values."""
    node = schema
    for step in path:
        if step == "[]":
            assert node.get("type") == "array", f"{path}: {step} expects an array"
            node = node["items"]
        elif step == "{}":
            assert node.get("type") == "object", f"{path}: {step} expects a map"
            node = node["additionalProperties"]
        else:
            assert step in node.get("properties", {}), f"missing field {step!r} in {path}"
            node = node["properties"][step]
    return node


def _assert_structural(node: dict[str, Any], where: str = "") -> None:
    """The rules the API server enforces for structural schemas, as far as we use them."""
    assert "type" in node, f"{where or '<root>'}: every node needs a type"
    assert not ({"properties", "additionalProperties"} <= node.keys()), (
        f"{where}: properties and additionalProperties are mutually exclusive"
    )
    for banned in ("$ref", "allOf", "anyOf", "oneOf", "not"):
        assert banned not in node, f"{where}: {banned} is not used in these CRDs"
    for name, child in node.get("properties", {}).items():
        _assert_structural(child, f"{where}.{name}")
    if node["type"] == "array":
        assert "items" in node, f"{where}: arrays need items"
        _assert_structural(node["items"], f"{where}[]")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        _assert_structural(extra, f"{where}{{}}")


def _unknown_fields(value: Any, node: dict[str, Any], where: str) -> list[str]:
    """Fields in `value` the schema would prune, plus type mismatches."""
    kind = node["type"]
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected object"]
        if where.endswith(".metadata") or node.get("x-kubernetes-preserve-unknown-fields"):
            return []
        found: list[str] = []
        extra = node.get("additionalProperties")
        for key, child in value.items():
            if key in node.get("properties", {}):
                found += _unknown_fields(child, node["properties"][key], f"{where}.{key}")
            elif isinstance(extra, dict):
                found += _unknown_fields(child, extra, f"{where}.{key}")
            else:
                found.append(f"{where}.{key}: not in schema")
        return found
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected array"]
        return [
            e for i, item in enumerate(value) for e in _unknown_fields(item, node["items"], f"{where}[{i}]")
        ]
    python_type = {"string": str, "boolean": bool, "integer": int}[kind]
    return [] if isinstance(value, python_type) else [f"{where}: expected {kind}"]


@pytest.fixture(scope="module")
def spc() -> dict[str, Any]:
    return _load_one(SPC_FILE)


@pytest.fixture(scope="module")
def spcps() -> dict[str, Any]:
    return _load_one(SPCPS_FILE)


@pytest.mark.parametrize(
    ("path", "kind", "plural", "singular"),
    [
        (SPC_FILE, "SecretProviderClass", "secretproviderclasses", "secretproviderclass"),
        (
            SPCPS_FILE,
            "SecretProviderClassPodStatus",
            "secretproviderclasspodstatuses",
            "secretproviderclasspodstatus",
        ),
    ],
)
def test_names_and_versions(path: Path, kind: str, plural: str, singular: str) -> None:
    crd = _load_one(path)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
    }, "upstream defines no shortNames or categories"

    versions = _versions(crd)
    assert list(versions) == ["v1", "v1alpha1"]
    v1, v1alpha1 = versions["v1"], versions["v1alpha1"]
    assert v1["served"] is True and v1["storage"] is True
    assert not v1.get("deprecated", False)
    assert v1alpha1["served"] is True and v1alpha1["storage"] is False
    assert v1alpha1["deprecated"] is True
    assert v1alpha1["deprecationWarning"].startswith(DEPRECATION_PREFIX)

    for version in versions.values():
        # Upstream has neither: status is written together with the object.
        assert "subresources" not in version
        assert "additionalPrinterColumns" not in version
        _assert_structural(version["schema"]["openAPIV3Schema"], version["name"])


@pytest.mark.parametrize("version", ["v1", "v1alpha1"])
def test_spc_schema_fields(spc: dict[str, Any], version: str) -> None:
    schema = _schema(spc, version)
    assert _at(schema, "spec", "provider")["type"] == "string"
    assert _at(schema, "spec", "parameters", "{}")["type"] == "string"
    secret_object = _at(schema, "spec", "secretObjects", "[]")
    assert _at(secret_object, "secretName")["type"] == "string"
    assert _at(secret_object, "type")["type"] == "string"
    assert _at(secret_object, "labels", "{}")["type"] == "string"
    assert _at(secret_object, "annotations", "{}")["type"] == "string"
    assert _at(secret_object, "data", "[]", "objectName")["type"] == "string"
    assert _at(secret_object, "data", "[]", "key")["type"] == "string"
    assert _at(schema, "status")["type"] == "object"


def test_spc_status_by_pod_only_in_v1alpha1(spc: dict[str, Any]) -> None:
    by_pod = _at(_schema(spc, "v1alpha1"), "status", "byPod", "[]")
    assert _at(by_pod, "id")["type"] == "string"
    assert _at(by_pod, "namespace")["type"] == "string"
    assert "byPod" not in _at(_schema(spc, "v1"), "status").get("properties", {})


@pytest.mark.parametrize("version", ["v1", "v1alpha1"])
def test_spcps_schema_fields(spcps: dict[str, Any], version: str) -> None:
    schema = _schema(spcps, version)
    assert "spec" not in schema["properties"], "upstream SPCPS has no spec"
    status = _at(schema, "status")
    assert _at(status, "podName")["type"] == "string"
    assert _at(status, "secretProviderClassName")["type"] == "string"
    assert _at(status, "mounted")["type"] == "boolean"
    assert _at(status, "targetPath")["type"] == "string"
    assert _at(status, "objects", "[]", "id")["type"] == "string"
    assert _at(status, "objects", "[]", "version")["type"] == "string"


def test_spcps_as_the_driver_writes_it_is_not_pruned(spcps: dict[str, Any]) -> None:
    obj = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "SecretProviderClassPodStatus",
        "metadata": {
            "name": "pod-default-spc",
            "labels": {"internal.secrets-store.csi.k8s.io/node-name": "n"},
        },
        "status": {
            "podName": "pod",
            "secretProviderClassName": "spc",
            "mounted": True,
            "targetPath": "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/vol/mount",
            "objects": [{"id": "secret/foo", "version": "v1"}],
        },
    }
    assert _unknown_fields(obj, _schema(spcps, "v1"), "") == []


@pytest.mark.parametrize(
    "name", ["spc-v1-e2e-provider.yaml", "spc-v1alpha1-e2e-provider.yaml", "spc-v1-e2e-provider-sync.yaml"]
)
def test_sample_spcs_fit_the_schema(spc: dict[str, Any], name: str) -> None:
    obj = _load_one(MANIFEST_DIR / name)
    group, version = obj["apiVersion"].split("/")
    assert group == GROUP
    assert obj["kind"] == "SecretProviderClass"
    assert _unknown_fields(obj, _schema(spc, version), "") == []
    objects = yaml.safe_load(obj["spec"]["parameters"]["objects"])
    parsed = [yaml.safe_load(entry) for entry in objects["array"]]
    assert parsed == [
        {"objectName": "foo", "objectVersion": "v1"},
        {"objectName": "fookey", "objectVersion": "v1"},
    ]


def test_sample_inline_pod() -> None:
    pod = _load_one(MANIFEST_DIR / "pod-inline.yaml")
    assert pod["metadata"]["name"] == "secrets-store-inline-crd"
    (volume,) = pod["spec"]["volumes"]
    assert volume["name"] == "secrets-store-inline"
    assert volume["csi"] == {
        "driver": "secrets-store.csi.k8s.io",
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": "e2e-provider"},
    }
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "local/busybox:1.35"
    assert container["imagePullPolicy"] == "Never"
    assert {"name": "secrets-store-inline", "mountPath": "/mnt/secrets-store", "readOnly": True} in container[
        "volumeMounts"
    ]
