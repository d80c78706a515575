"""Desired objects as a pure function of (spec, settings, a few cluster facts), from Jinja templates."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .names import (
    API_VERSION,
    CONFIG_HASH_ANNOTATION,
    DRIVER_NAME,
    KIND,
    MANAGED_BY_LABEL,
    OPERATOR_NAME,
    PART_OF,
    PART_OF_LABEL,
)
from .settings import Settings
from .spec import OS_LABEL, OperatorSpec

Manifest = dict[str, Any]

# Apply order: identities and permissions before the pods that use them; removal goes in reverse.
TEMPLATES = (
    "serviceaccount.yaml.j2",
    "rbac.yaml.j2",
    "csidriver.yaml.j2",
    "volumeprofile.yaml.j2",
    "metrics.yaml.j2",
    "prometheusrule.yaml.j2",
    "daemonset.yaml.j2",
)


@dataclasses.dataclass(frozen=True)
class ObjectNames:
    csidriver: str = DRIVER_NAME
    service_account: str = "secrets-store-csi-driver-node-sa"
    daemonset: str = "secrets-store-csi-driver-node"
    app: str = "secrets-store-csi-driver-node"
    metrics_service: str = "secrets-store-csi-driver-node-metrics"
    prometheus_rule: str = "secrets-store-csi-driver-alerts"
    # The ValidatingAdmissionPolicy enforcing the ephemeral volume profile, and its binding.
    volume_profile_policy: str = "secrets-store-csi-driver-ephemeral-volume-profile"


NAMES = ObjectNames()


@dataclasses.dataclass(frozen=True)
class Owner:
    """The ClusterCSIDriver; cluster-scoped, so it may own both cluster-scoped and namespaced children."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


@dataclasses.dataclass(frozen=True)
class ClusterFacts:
    """What rendering needs to know about the live cluster, read at reconcile time."""

    service_monitor_crd: bool = False
    prometheus_rule_crd: bool = False
    # The apiserver serves ValidatingAdmissionPolicies (Kubernetes 1.30 and later)...
    admission_policies: bool = False
    # ...and is OpenShift's, whose CSIInlineVolumeSecurity admission plugin enforces the profile itself.
    openshift: bool = False
    # tokenRequests of the live CSIDriver, kept while the spec leaves them Unmanaged.
    live_token_requests: tuple[Mapping[str, Any], ...] | None = None


def render(
    spec: OperatorSpec,
    settings: Settings,
    *,
    owner: Owner | None = None,
    facts: ClusterFacts = ClusterFacts(),
) -> list[Manifest]:
    """Every object the operator wants to exist, in apply order, labelled as its own."""
    context = {
        "names": NAMES,
        "namespace": settings.namespace,
        "images": settings.images,
        "driver": spec.driver,
        "verbosity": spec.log_level.verbosity,
        "node_selector": node_selector(spec),
        "tolerations": [toleration.to_manifest() for toleration in spec.driver.tolerations],
        "token_requests": token_requests(spec, facts),
        "service_monitor": facts.service_monitor_crd,
        "prometheus_rule": facts.prometheus_rule_crd,
        "volume_profile_policy": facts.admission_policies and not facts.openshift,
        "config_hash_annotation": CONFIG_HASH_ANNOTATION,
        "config_hash": config_hash(spec, settings),
    }
    environment = _environment(settings.templates_dir)
    manifests: list[Manifest] = []
    for name in TEMPLATES:
        text = environment.get_template(name).render(context)
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    for manifest in manifests:
        _mark_as_ours(manifest, owner)
    return manifests


def node_selector(spec: OperatorSpec) -> dict[str, str]:
    return {OS_LABEL: "linux", **spec.driver.node_selector}


def token_requests(spec: OperatorSpec, facts: ClusterFacts) -> list[dict[str, Any]] | None:
    """The CSIDriver's tokenRequests: the spec's when Managed, else whatever the live object has."""
    if spec.driver.token_requests is None:
        return None if facts.live_token_requests is None else [dict(r) for r in facts.live_token_requests]
    requests: list[dict[str, Any]] = []
    for audience in spec.driver.token_requests:
        request: dict[str, Any] = {"audience": audience.audience}
        if audience.expiration_seconds is not None:
            request["expirationSeconds"] = audience.expiration_seconds
        requests.append(request)
    return requests


def config_hash(spec: OperatorSpec, settings: Settings) -> str:
    """A digest of everything the node plugin's pods are configured from."""
    driver = spec.driver
    inputs = {
        "images": dataclasses.asdict(settings.images),
        "verbosity": spec.log_level.verbosity,
        "rotation": [driver.rotation_enabled, driver.rotation_interval_seconds],
        "healthCheck": [driver.provider_health_check, driver.provider_health_check_interval_seconds],
        "maxCallRecvMsgSize": driver.max_call_recv_msg_size,
        "syncSecret": driver.sync_secret,
        "nodeSelector": node_selector(spec),
        "tolerations": [toleration.to_manifest() for toleration in driver.tolerations],
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def go_duration(seconds: int) -> str:
    """Seconds as a Go duration; whole minutes stay `Nm` so the default renders as upstream's `2m`."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def _json(value: Any) -> str:
    # JSON is YAML: lists, maps and strings from the spec land in the manifest quoted, never as markup.
    return json.dumps(value)


def _mark_as_ours(manifest: Manifest, owner: Owner | None) -> None:
    metadata = manifest.setdefault("metadata", {})
    labels = metadata.setdefault("labels", {})
    labels[MANAGED_BY_LABEL] = OPERATOR_NAME
    labels[PART_OF_LABEL] = PART_OF
    if owner is not None:
        metadata["ownerReferences"] = [owner.reference()]


@functools.lru_cache(maxsize=4)
def _environment(templates_dir: Path) -> jinja2.Environment:
    # Renders YAML, not HTML: every value from the spec goes through the `json` filter instead.
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701
    )
    environment.filters.update(json=_json, gobool=_go_bool, duration=go_duration)
    return environment
