"""What the operator takes from its environment: images (as OLM passes them), namespaces, templates."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DEFAULT_NAMESPACE = "secrets-store-csi-driver"
DEFAULT_LIVENESS_PROBE_IMAGE = "registry.k8s.io/sig-storage/livenessprobe:v2.19.0"
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# A source checkout or editable install finds assets/templates next to the package; the operator
# image ships assets/ under share/ (images/operator.Dockerfile). SSCSI_OPERATOR_TEMPLATES (the
# templates directory) or SSCSI_ASSETS_DIR (the assets directory) override both.
TEMPLATE_DIRS = (
    Path(__file__).resolve().parents[2] / "assets" / "templates",
    Path("/usr/share/secrets-store-csi-py/assets/templates"),
)


def distribution_version() -> str:
    try:
        return metadata.version("secrets-store-csi-py-operator")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class Images:
    driver: str
    liveness_probe: str


@dataclass(frozen=True)
class Settings:
    images: Images
    # Where the namespaced children (ServiceAccount, DaemonSet, Service...) go. The operator
    # does not create or delete this namespace: OLM installs the operator into it.
    namespace: str
    templates_dir: Path
    version: str
    # Upper bound on how long drift (an edited or deleted child) can last unrepaired.
    resync_seconds: float = 30.0

    @classmethod
    def from_environment(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
        template_dirs: tuple[Path, ...] = TEMPLATE_DIRS,
    ) -> Settings:
        env = os.environ if env is None else env
        version = distribution_version()
        images = Images(
            driver=env.get("DRIVER_IMAGE") or f"ghcr.io/secrets-store-csi-py/driver:v{version}",
            liveness_probe=env.get("LIVENESS_PROBE_IMAGE") or DEFAULT_LIVENESS_PROBE_IMAGE,
        )
        return cls(
            images=images,
            namespace=_operand_namespace(env, namespace_file),
            templates_dir=_templates_dir(env, template_dirs),
            version=version,
        )


def _operand_namespace(env: Mapping[str, str], namespace_file: Path) -> str:
    for name in ("OPERAND_NAMESPACE", "OPERATOR_NAMESPACE", "POD_NAMESPACE"):
        if env.get(name):
            return env[name]
    try:
        return namespace_file.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


def _templates_dir(env: Mapping[str, str], candidates: tuple[Path, ...]) -> Path:
    if env.get("SSCSI_OPERATOR_TEMPLATES"):
        return Path(env["SSCSI_OPERATOR_TEMPLATES"])
    if env.get("SSCSI_ASSETS_DIR"):
        return Path(env["SSCSI_ASSETS_DIR"]) / "templates"
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "no operator templates found; set SSCSI_OPERATOR_TEMPLATES (looked in "
        + ", ".join(str(c) for c in candidates)
        + ")"
    )
