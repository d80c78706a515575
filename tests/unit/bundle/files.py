"""Shared by the bundle tests: the paths, the pipeline module (hack/bundle.py) and small readers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import bundle as pipeline

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = "secrets-store-csi-py"
MANIFESTS = ROOT / "bundle" / "manifests"
CSV_FILE = MANIFESTS / f"{PACKAGE}.clusterserviceversion.yaml"
ANNOTATIONS_FILE = ROOT / "bundle" / "metadata" / "annotations.yaml"
CATALOG_FILE = ROOT / "catalog" / PACKAGE / "catalog.yaml"
MANAGER = ROOT / "config" / "manager" / "manager.yaml"
CSV_BASE = ROOT / "config" / "manifests" / "bases" / f"{PACKAGE}.clusterserviceversion.yaml"
CLUSTER_CSI_DRIVER_CRD = (
    ROOT / "assets" / "operator" / "operator.secrets-store.csi.x-k8s.io_clustercsidrivers.yaml"
)
CRD_SOURCES = [*sorted((ROOT / "assets" / "crds").glob("*.yaml")), CLUSTER_CSI_DRIVER_CRD]


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        found = tomllib.load(handle)["project"]["version"]
    assert isinstance(found, str)
    return found


def load_csv() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CSV_FILE.read_text())
    return document


def only_container(csv: dict[str, Any]) -> dict[str, Any]:
    [deployment] = csv["spec"]["install"]["spec"]["deployments"]
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def env_by_name(container: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var for var in container.get("env") or []}


def expanded(container: dict[str, Any]) -> dict[str, str]:
    """The literal values as the kubelet sets them: $(VAR) refers to a variable defined earlier."""
    values: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            values[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], var["value"])
    return values


def catalog_docs(path: Path = CATALOG_FILE) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def require_tools() -> None:
    """Skip unless kubectl, operator-sdk and opm are there (`make tools olm-tools`)."""
    try:
        pipeline.Tools.find()
    except SystemExit as err:
        pytest.skip(str(err))
