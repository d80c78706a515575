"""The CSV base's UI metadata (config/manifests/bases), as it reaches the bundle: it fits the CRDs
(examples, descriptor paths and types) and the operator (the objects a ClusterCSIDriver owns)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sscsi_operator import names

from unit.bundle.files import CRD_SOURCES, load_csv
from unit.bundle.rbac import rendered_objects


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    return load_csv()


def _walk(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    """Paths of `value` the schema does not know (preserve-unknown-fields and maps allow anything)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None:
            return  # a map (additionalProperties) or free-form object
        for key, item in value.items():
            if key not in properties:
                yield f"{path}.{key}"
            else:
                yield from _walk(properties[key], item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _walk(schema["items"], item, f"{path}[{index}]")


def _crds_by_kind() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in (yaml.safe_load(p.read_text()) for p in CRD_SOURCES)}


def _schema_path(crd: dict[str, Any], version: str, root: str, path: str) -> list[dict[str, Any]]:
    """The schema nodes from `root` down to `path` (dotted); fails naming a field the CRD lacks."""
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    nodes: list[dict[str, Any]] = [served["schema"]["openAPIV3Schema"]["properties"][root]]
    for step in path.split("."):
        properties = nodes[-1].get("properties") or {}
        assert step in properties, f"{crd['metadata']['name']}: no field {root}.{path} for a descriptor"
        nodes.append(properties[step])
    return nodes


def test_every_owned_api_has_an_example_that_fits_its_schema(csv: dict[str, Any]) -> None:
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    crds = {(crd["spec"]["group"], kind): crd for kind, crd in _crds_by_kind().items()}
    owned = {
        (f"{o['name'].split('.', 1)[1]}/{o['version']}", o["kind"])
        for o in csv["spec"]["customresourcedefinitions"]["owned"]
    }
    assert {(e["apiVersion"], e["kind"]) for e in examples} == owned  # one example per owned version
    assert len(examples) == len(owned)
    for example in examples:
        group, version = example["apiVersion"].split("/")
        crd = crds[(group, example["kind"])]
        [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
        schema = served["schema"]["openAPIV3Schema"]
        body = {k: v for k, v in example.items() if k not in ("apiVersion", "kind", "metadata")}
        assert list(_walk(schema, body, example["kind"])) == []
    [driver] = [e for e in examples if e["kind"] == names.KIND]
    assert driver["metadata"]["name"] == names.SINGLETON


def test_descriptors_name_real_fields_and_fit_their_types(csv: dict[str, Any]) -> None:
    """Every descriptor path exists; select lists are the field's enum; number/switch match its type."""
    crds = _crds_by_kind()
    typed = {"integer": "number", "boolean": "booleanSwitch"}
    seen = 0
    for owned in csv["spec"]["customresourcedefinitions"]["owned"]:
        for root in ("spec", "status"):
            for descriptor in owned.get(f"{root}Descriptors") or []:
                seen += 1
                schema = _schema_path(crds[owned["kind"]], owned["version"], root, descriptor["path"])[-1]
                assert descriptor["description"] and descriptor["displayName"]
                ui = [x.rpartition("com.tectonic.ui:")[2] for x in descriptor.get("x-descriptors") or []]
                selects = [x.removeprefix("select:") for x in ui if x.startswith("select:")]
                if root == "spec":
                    assert selects == list(schema.get("enum") or []), descriptor["path"]
                    if schema.get("type") in typed and "enum" not in schema:
                        assert typed[schema["type"]] in ui, descriptor["path"]
    assert seen >= 20


def test_the_driver_resources_are_what_the_operator_renders(csv: dict[str, Any]) -> None:
    [owned] = [o for o in csv["spec"]["customresourcedefinitions"]["owned"] if o["kind"] == names.KIND]
    rendered = {
        (o["kind"], o["metadata"]["name"], o["apiVersion"].rpartition("/")[2]) for o in rendered_objects()
    }
    assert {(r["kind"], r["name"], r["version"]) for r in owned["resources"]} == rendered


def test_install_modes_and_listing_metadata(csv: dict[str, Any]) -> None:
    modes = {m["type"]: m["supported"] for m in csv["spec"]["installModes"]}
    assert modes == {
        "OwnNamespace": False,
        "SingleNamespace": False,
        "MultiNamespace": False,
        "AllNamespaces": True,
    }
    annotations = csv["metadata"]["annotations"]
    assert annotations["capabilities"] == "Seamless Upgrades"
    assert annotations["categories"] == "Security"
    assert annotations["operatorframework.io/suggested-namespace"] == "secrets-store-csi-driver"
    template = json.loads(annotations["operatorframework.io/suggested-namespace-template"])
    assert template["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert "createdAt" not in annotations  # a timestamp would make `make bundle` non-deterministic
    [icon] = csv["spec"]["icon"]
    assert icon["mediatype"] == "image/svg+xml"
    assert base64.b64decode(icon["base64data"]).startswith(b"<svg")
    assert csv["spec"]["minKubeVersion"]
