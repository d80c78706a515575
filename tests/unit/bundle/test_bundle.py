"""The OLM bundle (made by hack/bundle.py from config/): offline checks of what it promises.

Schema-level validation is operator-sdk's and opm's job (hack/bundle-validate.sh); these tests check
what those tools cannot know: that the bundle matches its sources (config/, assets/, pyproject.toml)
and that the operator Deployment is hardened and configured the way sscsi_operator.settings reads it.
The CSV base's UI metadata: test_csv_base.py; the catalog and the pipeline itself:
test_catalog.py; the RBAC: test_rbac.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sscsi_operator.settings import TEMPLATE_DIRS, Settings
from versions_env import versions

from unit.bundle.files import (
    ANNOTATIONS_FILE,
    CRD_SOURCES,
    CSV_BASE,
    CSV_FILE,
    MANAGER,
    MANIFESTS,
    PACKAGE,
    ROOT,
    catalog_docs,
    env_by_name,
    expanded,
    load_csv,
    only_container,
    pipeline,
    project_version,
)

REQUIRED_ANNOTATIONS = {
    "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
    "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
    "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
    "operators.operatorframework.io.bundle.package.v1": PACKAGE,
    "operators.operatorframework.io.bundle.channels.v1": "stable,candidate",
    "operators.operatorframework.io.bundle.channel.default.v1": "stable",
}
# What settings reads, and the RELATED_IMAGE_* variable (operator-sdk's relatedImages) each expands.
IMAGE_ENV = {
    "DRIVER_IMAGE": "RELATED_IMAGE_DRIVER",
    "LIVENESS_PROBE_IMAGE": "RELATED_IMAGE_LIVENESSPROBE",
}


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    return load_csv()


@pytest.fixture(scope="module")
def install(csv: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = csv["spec"]["install"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(csv: dict[str, Any]) -> dict[str, Any]:
    return only_container(csv)


# --- layout, names, one source ----------------------------------------------------------------


def test_the_csv_is_named_and_versioned_from_pyproject(csv: dict[str, Any]) -> None:
    version = project_version()
    assert csv["metadata"]["name"] == f"{PACKAGE}.v{version}"
    assert csv["spec"]["version"] == version
    assert csv["metadata"]["annotations"]["olm.skipRange"] == f">=0.0.0 <{version}"
    assert "replaces" not in csv["spec"]  # the first release


def test_the_config_defaults_are_this_version() -> None:
    """config/ alone (kustomize config/manifests | operator-sdk generate bundle) gives this bundle."""
    version = project_version()
    base = yaml.safe_load(CSV_BASE.read_text())
    assert base["metadata"]["annotations"]["olm.skipRange"] == f">=0.0.0 <{version}"
    [container] = yaml.safe_load(MANAGER.read_text())["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{pipeline.REGISTRY}/operator:v{version}"
    assert base["metadata"]["annotations"]["containerImage"] == container["image"]
    assert env_by_name(container)["RELATED_IMAGE_DRIVER"]["value"] == f"{pipeline.REGISTRY}/driver:v{version}"


def test_the_bundle_crds_are_the_source_crds() -> None:
    """operator-sdk rewrites the CRDs it is given (from assets/, through config/crd): same objects."""
    bundled = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p != CSV_FILE)
    assert bundled == sorted(p.name for p in CRD_SOURCES)
    for source in CRD_SOURCES:
        want, got = yaml.safe_load(source.read_text()), yaml.safe_load((MANIFESTS / source.name).read_text())
        assert got["spec"] == want["spec"], f"{source.name}: run `make bundle`"
        for key in ("name", "annotations", "labels"):
            assert got["metadata"].get(key) == want["metadata"].get(key), f"{source.name}: {key}"


def test_owned_crds_are_exactly_the_bundled_crds_with_texts(csv: dict[str, Any]) -> None:
    owned = csv["spec"]["customresourcedefinitions"]["owned"]
    crds = [yaml.safe_load(p.read_text()) for p in CRD_SOURCES]
    served = {
        (crd["metadata"]["name"], v["name"]) for crd in crds for v in crd["spec"]["versions"] if v["served"]
    }
    assert {(o["name"], o["version"]) for o in owned} == served  # every served version, each once
    assert len(owned) == len(served)
    assert "required" not in csv["spec"]["customresourcedefinitions"]
    for entry in owned:
        assert entry["displayName"] and entry["description"], entry["name"]


def test_annotations_and_bundle_dockerfile_agree() -> None:
    annotations = yaml.safe_load(ANNOTATIONS_FILE.read_text())["annotations"]
    assert {k: annotations.get(k) for k in REQUIRED_ANNOTATIONS} == REQUIRED_ANNOTATIONS
    sdk = versions()["OPERATOR_SDK_VERSION"]
    assert annotations["operators.operatorframework.io.metrics.builder"] == f"operator-sdk-{sdk}"
    dockerfile = (ROOT / "bundle.Dockerfile").read_text().splitlines()
    assert "FROM scratch" in dockerfile
    labels = dict(
        line.removeprefix("LABEL ").split("=", 1)
        for line in dockerfile
        if line.startswith("LABEL operators.operatorframework.io.")
    )
    assert labels == annotations
    assert "COPY bundle/manifests /manifests/" in dockerfile
    assert "COPY bundle/metadata /metadata/" in dockerfile


# --- the operator Deployment --------------------------------------------------------------------


def test_the_csv_deployment_is_config_manager(install: dict[str, Any]) -> None:
    [deployment] = install["deployments"]
    manager = yaml.safe_load(MANAGER.read_text())
    assert deployment["name"] == manager["metadata"]["name"]
    assert deployment["label"] == manager["metadata"]["labels"]
    assert deployment["spec"]["template"]["spec"] == manager["spec"]["template"]["spec"]


def test_the_operator_deployment_is_hardened(install: dict[str, Any]) -> None:
    [deployment] = install["deployments"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # a standalone kopf operator: never two at once
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in context
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_the_probes_hit_the_endpoint_the_operator_serves(container: dict[str, Any]) -> None:
    [liveness_arg] = [a for a in container["args"] if a.startswith("--liveness=")]
    match = re.fullmatch(r"--liveness=http://0\.0\.0\.0:(\d+)(/\S+)", liveness_arg)
    assert match, liveness_arg
    port, path = int(match.group(1)), match.group(2)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"]["path"] == path
        assert ports[probe["httpGet"]["port"]] == port


def test_the_environment_is_what_settings_reads(container: dict[str, Any], tmp_path: Path) -> None:
    env = env_by_name(container)
    assert set(env) == {*IMAGE_ENV, *IMAGE_ENV.values(), "OPERATOR_NAMESPACE"}
    order = [var["name"] for var in container["env"]]
    for name, related in IMAGE_ENV.items():
        assert env[name]["value"] == f"$({related})"
        assert order.index(related) < order.index(name), "the kubelet expands only earlier variables"
    assert env["OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    values = {name: expanded(container)[name] for name in IMAGE_ENV} | {"OPERATOR_NAMESPACE": "olm-ns"}
    settings = Settings.from_environment(
        values, namespace_file=tmp_path / "absent", template_dirs=(ROOT / "assets" / "templates",)
    )
    assert settings.namespace == "olm-ns"
    assert settings.images.driver == values["DRIVER_IMAGE"]
    assert settings.images.liveness_probe == values["LIVENESS_PROBE_IMAGE"]


def test_the_pinned_images_are_the_operators_own_defaults(container: dict[str, Any], tmp_path: Path) -> None:
    """Without OLM's variables the operator would deploy the same images (one place decides them)."""
    defaults = Settings.from_environment(
        {}, namespace_file=tmp_path / "absent", template_dirs=(ROOT / "assets" / "templates",)
    )
    if defaults.version != project_version():
        pytest.skip(
            f"installed distribution {defaults.version} != pyproject {project_version()}: run `make setup`"
        )
    env = expanded(container)
    assert env["DRIVER_IMAGE"] == defaults.images.driver
    assert env["LIVENESS_PROBE_IMAGE"] == defaults.images.liveness_probe


def test_related_images_list_every_image(csv: dict[str, Any], container: dict[str, Any]) -> None:
    env = expanded(container)
    related = {entry["name"]: entry["image"] for entry in csv["spec"]["relatedImages"]}
    assert related == {
        "driver": env["DRIVER_IMAGE"],
        "livenessprobe": env["LIVENESS_PROBE_IMAGE"],
    }
    assert csv["metadata"]["annotations"]["containerImage"] == container["image"]
    assert container["image"].endswith(f":v{project_version()}")
    [bundle] = [d for d in catalog_docs() if d["schema"] == "olm.bundle"]
    assert {r["image"] for r in bundle["relatedImages"]} == {container["image"], *related.values()}


def test_the_operator_image_ships_the_templates_where_the_operator_looks(container: dict[str, Any]) -> None:
    """images/operator.Dockerfile copies assets/ somewhere; settings must find the templates there."""
    dockerfile = (ROOT / "images" / "operator.Dockerfile").read_text()
    [destination] = re.findall(r"^COPY\s+(?:--\S+\s+)*assets\s+(\S+)\s*$", dockerfile, flags=re.MULTILINE)
    env_lines = re.findall(r"^ENV\s+(.*)$", dockerfile, flags=re.MULTILINE)
    image_env = dict(pair.split("=", 1) for line in env_lines for pair in line.split() if "=" in pair)
    explicit = env_by_name(container).get("SSCSI_OPERATOR_TEMPLATES", {}).get("value") or image_env.get(
        "SSCSI_OPERATOR_TEMPLATES"
    )
    looked_in = [explicit] if explicit else [str(d) for d in TEMPLATE_DIRS]
    assert f"{destination.rstrip('/')}/templates" in looked_in, (
        f"the image has the templates in {destination}/templates, the operator looks in {looked_in}"
    )
