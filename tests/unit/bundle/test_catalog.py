"""The file-based catalog, and the pipeline that makes bundle and catalog (hack/bundle.py): fresh,
deterministic, and able to make the next release with the committed one in the same catalog."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from versions_env import versions

from unit.bundle.files import (
    CSV_FILE,
    PACKAGE,
    ROOT,
    catalog_docs,
    expanded,
    load_csv,
    pipeline,
    project_version,
    require_tools,
)


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    return load_csv()


def test_the_catalog_offers_the_bundle_in_both_channels(csv: dict[str, Any]) -> None:
    docs = catalog_docs()
    [package] = [d for d in docs if d["schema"] == "olm.package"]
    assert package["name"] == PACKAGE and package["defaultChannel"] == "stable"
    assert package["icon"]["base64data"] == csv["spec"]["icon"][0]["base64data"]
    channels = {d["name"]: d for d in docs if d["schema"] == "olm.channel"}
    assert set(channels) == {"stable", "candidate"}
    for channel in channels.values():
        assert channel["entries"] == [
            {"name": csv["metadata"]["name"], "skipRange": f">=0.0.0 <{project_version()}"}
        ]
    [bundle] = [d for d in docs if d["schema"] == "olm.bundle"]
    assert bundle["name"] == csv["metadata"]["name"]
    assert bundle["image"] == f"ghcr.io/secrets-store-csi-py/operator-bundle:v{project_version()}"
    properties = {p["type"]: p["value"] for p in bundle["properties"] if p["type"] != "olm.gvk"}
    assert properties["olm.package"] == {"packageName": PACKAGE, "version": project_version()}


def test_the_catalog_dockerfile_pins_opm() -> None:
    pinned = versions()
    dockerfile = (ROOT / "catalog.Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert bases and set(bases) == {f"quay.io/operator-framework/opm:{pinned['OPM_VERSION']}"}
    assert "ADD catalog /configs" in dockerfile
    assert "LABEL operators.operatorframework.io.index.configs.v1=/configs" in dockerfile


# --- the pipeline -------------------------------------------------------------------------------


def _bundle_py(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "bundle.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_committed_files_are_what_the_pipeline_makes() -> None:
    """`make bundle` is deterministic and the committed files are fresh (hack/bundle.py --check)."""
    require_tools()
    out = _bundle_py("--check")
    assert out.returncode == 0, out.stderr


def test_the_next_release_upgrades_from_the_committed_one(tmp_path: Path) -> None:
    """The same pipeline makes version N+1 elsewhere: new images, replaces, a catalog with both."""
    require_tools()
    old, new = project_version(), "99.0.0"
    registry = "localhost:5000/sscsi"
    out = _bundle_py("--version", new, "--registry", registry, "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    csv = yaml.safe_load((tmp_path / "bundle" / "manifests" / CSV_FILE.name).read_text())
    assert csv["metadata"]["name"] == f"{PACKAGE}.v{new}" and csv["spec"]["replaces"] == f"{PACKAGE}.v{old}"
    assert csv["metadata"]["annotations"]["olm.skipRange"] == f">=0.0.0 <{new}"
    [deployment] = csv["spec"]["install"]["spec"]["deployments"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{registry}/operator:v{new}"
    assert expanded(container)["DRIVER_IMAGE"] == f"{registry}/driver:v{new}"
    docs = [d for d in yaml.safe_load_all((tmp_path / "catalog" / PACKAGE / "catalog.yaml").read_text()) if d]
    bundles = {d["name"]: d["image"] for d in docs if d["schema"] == "olm.bundle"}
    assert bundles == {
        f"{PACKAGE}.v{old}": f"ghcr.io/secrets-store-csi-py/operator-bundle:v{old}",
        f"{PACKAGE}.v{new}": f"{registry}/operator-bundle:v{new}",
    }
    for channel in (d for d in docs if d["schema"] == "olm.channel"):
        assert channel["entries"][-1] == {
            "name": f"{PACKAGE}.v{new}",
            "replaces": f"{PACKAGE}.v{old}",
            "skipRange": f">=0.0.0 <{new}",
        }
    again = _bundle_py("--version", new, "--registry", registry, "--out", str(tmp_path), "--check")
    assert again.returncode == 0, again.stderr  # and regenerating changes nothing


def test_semver_order() -> None:
    ordered = ["0.1.0", "0.2.0-rc.1", "0.2.0", "0.10.0", "1.0.0"]
    assert sorted(ordered, key=pipeline.semver_key) == ordered
