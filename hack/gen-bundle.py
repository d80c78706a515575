#!/usr/bin/env python3
"""Generate the OLM bundle and the file-based catalog from the project's sources (`make bundle`).

Sources, each used as is:
- the version: pyproject.toml;
- the CRDs: assets/crds/*.yaml and the CustomResourceDefinitions in assets/operator/, copied byte for
  byte into bundle/manifests;
- the operand images: the operator's own defaults (sscsi_operator.settings);
- the operator's RBAC: assets/operator/rbac.yaml (the same rules the operator's e2e tests run with),
  checked here against what the operator needs: its own calls (the kinds it manages and watches, from
  sscsi_operator.kube / .handlers) and every rule of the roles it creates, from its own rendering of
  assets/templates (RBAC lets it grant only what it holds). A missing rule fails `make bundle`; a rule
  nothing accounts for is reported (tests/e2e/test_csv_rbac.py then proves it unused).

Outputs (relative to the repository root):
  bundle/manifests/   the ClusterServiceVersion and the three CRDs
  bundle/metadata/annotations.yaml
  bundle.Dockerfile
  catalog/secrets-store-csi-py/catalog.yaml   olm.package (opm init), olm.channel, olm.bundle (opm render)
  catalog.Dockerfile                           opm generate dockerfile

The output is a pure function of the sources and the pinned opm: no timestamps, sorted keys.
`--check` regenerates into a temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from sscsi_operator import handlers, kube, names, render, settings  # noqa: E402
from sscsi_operator.model import OperatorSpec  # noqa: E402

Obj = dict[str, Any]

PACKAGE = "secrets-store-csi-py"
CHANNELS = ("stable", "candidate")
DEFAULT_CHANNEL = "stable"
DISPLAY_NAME = "Secrets Store CSI Driver (Python)"
# Where the images are published. The driver's default in sscsi_operator.settings uses the same
# registry; tests/unit/test_bundle.py keeps the two in step.
REGISTRY = "ghcr.io/secrets-store-csi-py"
SUGGESTED_NAMESPACE = "secrets-store-csi-driver"
MIN_KUBE_VERSION = "1.30.0"
PROJECT_URL = "https://github.com/secrets-store-csi-py/secrets-store-csi-py"
MAINTAINER = {"name": "secrets-store-csi-py maintainers", "email": "maintainers@secrets-store-csi-py.dev"}
OPERATOR_DEPLOYMENT = names.OPERATOR_NAME
OPERATOR_SERVICE_ACCOUNT = names.OPERATOR_NAME
HEALTH_PORT = 8081

BUNDLE_DIR = Path("bundle")
MANIFESTS_DIR = BUNDLE_DIR / "manifests"
METADATA_DIR = BUNDLE_DIR / "metadata"
CATALOG_ROOT = Path("catalog")
CATALOG_FILE = CATALOG_ROOT / PACKAGE / "catalog.yaml"
CSV_FILE = MANIFESTS_DIR / f"{PACKAGE}.clusterserviceversion.yaml"
CRD_SOURCES = (Path("assets/crds"), Path("assets/operator"))
RBAC_SOURCE = Path("assets/operator/rbac.yaml")
# Every file the generator owns; anything else found under these directories is stale.
OWNED_DIRS = (MANIFESTS_DIR, METADATA_DIR, CATALOG_ROOT)

ICON_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="64" height="64">
  <path d="M32 3 L56 12 V30 C56 45 46 56 32 61 C18 56 8 45 8 30 V12 Z" fill="#1f4e79"/>
  <path d="M32 8 L51 15.5 V30 C51 42 43 51 32 55.5 C21 51 13 42 13 30 V15.5 Z" fill="#2e75b6"/>
  <circle cx="32" cy="26" r="8" fill="none" stroke="#ffffff" stroke-width="4"/>
  <path d="M32 34 V48 M32 41 H38 M32 46 H37" stroke="#ffffff" stroke-width="4" fill="none"/>
</svg>
"""

PACKAGE_DESCRIPTION = """\
# Secrets Store CSI Driver (Python distribution)

Mount secrets from an external store (Vault, AWS, Azure, GCP and others, through their provider
plugins) into pods as files, with rotation and optional sync to Kubernetes Secrets. The operator
deploys the node plugin for one cluster-wide ClusterCSIDriver object and keeps it as declared.
"""

CSV_DESCRIPTION = """\
The Secrets Store CSI Driver lets pods mount secrets that live in an external store as files.
The driver asks the store's provider plugin (Vault, AWS, Azure, GCP, ...) for the contents and
writes them into a tmpfs that belongs to the pod, so secrets never land on the node's disk.

This distribution is written in Python and is a drop-in for the upstream driver: same CSI driver
name (`secrets-store.csi.k8s.io`), same provider API, same SecretProviderClass CRDs, so existing
providers and manifests keep working.

## Getting started

1. Install the operator in the `secrets-store-csi-driver` namespace. The node plugin it deploys
   there is privileged (it mounts tmpfs volumes for kubelet), so that namespace must allow
   privileged pods (`pod-security.kubernetes.io/enforce: privileged`).
2. Create the ClusterCSIDriver named `secrets-store.csi.k8s.io`; the operator deploys the CSIDriver,
   the node plugin DaemonSet and its RBAC, and reports progress in the object's conditions.
3. Install a provider plugin, then create a SecretProviderClass and mount it in a pod with a `csi`
   volume whose driver is `secrets-store.csi.k8s.io`.

## Configuration

The ClusterCSIDriver selects secret rotation (on by default, every 2 minutes at most), the service
account tokens kubelet passes to providers, whether contents may be synced to Kubernetes Secrets,
node placement, log levels, and `managementState` (Managed, Unmanaged or Removed).

## Uninstall

Delete the ClusterCSIDriver first and wait until it is gone: the operator removes the driver, then
releases the object. Only then delete the Subscription and the ClusterServiceVersion. CRDs and
SecretProviderClasses are kept.
"""

CRD_TEXT = {
    names.KIND: (
        "Secrets Store CSI Driver",
        "The one cluster-wide driver installation (named secrets-store.csi.k8s.io): management state, "
        "log levels, rotation, token requests, secret sync and node placement.",
    ),
    "SecretProviderClass": (
        "Secret Provider Class",
        "Names a provider plugin and its parameters for a secrets-store CSI volume, and optionally "
        "the Kubernetes Secrets to sync from the mounted files.",
    ),
    "SecretProviderClassPodStatus": (
        "Secret Provider Class Pod Status",
        "Written by the node plugin: which objects (and versions) are mounted for a pod's volume.",
    ),
}

# (path, displayName, extra x-descriptors). The description and the type-derived x-descriptors
# (select for enums, booleanSwitch, number) are read from the CRD schema, so a descriptor can never
# name a field the CRD does not have.
ADVANCED = "urn:alm:descriptor:com.tectonic.ui:advanced"
SPEC_DESCRIPTORS: Mapping[str, Sequence[tuple[str, str, tuple[str, ...]]]] = {
    names.KIND: (
        ("managementState", "Management State", ()),
        ("logLevel", "Driver Log Level", ()),
        ("operatorLogLevel", "Operator Log Level", ()),
        ("driverConfig.secretsStore.secretRotation.type", "Secret Rotation", ()),
        ("driverConfig.secretsStore.secretRotation.custom.minimumRefreshAge", "Minimum Refresh Age", ()),
        ("driverConfig.secretsStore.tokenRequests.type", "Token Requests", ()),
        ("driverConfig.secretsStore.tokenRequests.managed.audiences", "Token Audiences", (ADVANCED,)),
        ("driverConfig.secretsStore.syncSecret.enabled", "Sync as Kubernetes Secret", ()),
        ("driverConfig.secretsStore.ephemeralVolumeProfile", "Ephemeral Volume Profile", (ADVANCED,)),
        ("driverConfig.secretsStore.nodePlacement.nodeSelector", "Node Selector", (ADVANCED,)),
        ("driverConfig.secretsStore.nodePlacement.tolerations", "Tolerations", (ADVANCED,)),
        ("driverConfig.secretsStore.providerHealthCheck.enabled", "Provider Health Check", (ADVANCED,)),
        (
            "driverConfig.secretsStore.providerHealthCheck.intervalSeconds",
            "Provider Health Check Interval",
            (ADVANCED,),
        ),
        ("driverConfig.secretsStore.maxCallRecvMessageSize", "Max Provider Response Size", (ADVANCED,)),
    ),
    "SecretProviderClass": (
        ("provider", "Provider", ()),
        ("parameters", "Parameters", ()),
        ("secretObjects", "Synced Secrets", (ADVANCED,)),
    ),
}
CONDITIONS = "urn:alm:descriptor:io.kubernetes.conditions"
TEXT = "urn:alm:descriptor:text"
STATUS_DESCRIPTORS: Mapping[str, Sequence[tuple[str, str, tuple[str, ...]]]] = {
    names.KIND: (
        ("conditions", "Conditions", (CONDITIONS,)),
        ("readyReplicas", "Ready Node Plugin Pods", (TEXT,)),
        ("version", "Version", (TEXT,)),
        ("observedGeneration", "Observed Generation", (TEXT,)),
    ),
    "SecretProviderClassPodStatus": (
        ("podName", "Pod", (TEXT,)),
        ("secretProviderClassName", "Secret Provider Class", (TEXT,)),
        ("mounted", "Mounted", (TEXT,)),
        ("targetPath", "Target Path", (TEXT,)),
    ),
}


# --- RBAC ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """Verbs on some resources of one API group, and why the operator holds them."""

    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str
    resource_names: tuple[str, ...] = ()

    def rule(self) -> Obj:
        rule: Obj = {
            "apiGroups": [self.group],
            "resources": sorted(self.resources),
            "verbs": sorted(self.verbs),
        }
        if self.resource_names:
            rule["resourceNames"] = sorted(self.resource_names)
        return rule


# What the operator does with every child kind (sscsi_operator.apply / reconcile):
#  list: observe() finds its children by label; get: remove_all() checks what is left, the reconciler
#  reads the DaemonSet and the CSIDriver; patch: server-side apply; create: a server-side apply that
#  creates the object is authorized as create too; delete: prune and removal.
CHILD_VERBS = ("create", "delete", "get", "list", "patch")
# kopf's event watchers on the children (drift repair) add watch.
WATCH = "watch"


def operator_grants() -> tuple[list[Grant], list[Grant]]:
    """(cluster-wide, operator-namespace) grants for the operator's own API calls."""
    watched = set(handlers.WATCHED_KINDS)
    cluster: list[Grant] = [
        Grant(
            names.GROUP,
            (names.PLURAL,),
            ("list", "watch", "patch"),
            "kopf watches the ClusterCSIDriver and patches its finalizer and handler-state annotations",
        ),
        Grant(
            names.GROUP,
            (f"{names.PLURAL}/status",),
            ("patch",),
            "the reconciler writes conditions, generations and readyReplicas",
        ),
        Grant(
            "",
            ("events",),
            ("create",),
            "the reconciler posts Events about the ClusterCSIDriver (in namespace default)",
        ),
    ]
    namespaced: list[Grant] = []
    for kind in kube.CHILD_KINDS:
        verbs = CHILD_VERBS + ((WATCH,) if kind in watched else ())
        if kind.namespaced:
            reason = f"the driver's {kind.kind} in the operator's namespace: apply, prune, remove"
            if kind is kube.SERVICE_MONITOR:
                reason += " (only while the monitoring.coreos.com ServiceMonitor API is served)"
            namespaced.append(Grant(kind.group, (kind.plural,), verbs, reason))
        else:
            reason = f"the driver's cluster-scoped {kind.kind}: apply, prune, remove"
            cluster.append(Grant(kind.group, (kind.plural,), verbs, reason))
    return cluster, namespaced


def rendered_objects() -> list[Obj]:
    """Everything the operator can render: defaults plus every optional object switched on."""
    operator_settings = settings.Settings(
        images=settings.Images("driver", "registrar", "livenessprobe"),
        namespace=SUGGESTED_NAMESPACE,
        templates_dir=ROOT / "assets" / "templates",
        version="0.0.0",
    )
    spec = OperatorSpec()
    assert spec.driver.sync_secret, "the sync role is rendered only with syncSecret on"
    return render.render(spec, operator_settings, facts=render.ClusterFacts(service_monitor_crd=True))


def escalation_grants(objects: Iterable[Obj]) -> list[Grant]:
    """Every rule of every ClusterRole the operator creates.

    Kubernetes lets a subject create a role, or bind one, only when it holds every rule in it (no
    `escalate`/`bind` here, on purpose), so the operator must hold these cluster-wide.
    """
    objects = list(objects)
    roles = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "ClusterRole"}
    for obj in objects:
        if obj["kind"] in ("Role", "RoleBinding"):
            raise SystemExit(f"the operator renders a {obj['kind']}: teach {Path(__file__).name} its scope")
        if obj["kind"] == "ClusterRoleBinding" and obj["roleRef"]["name"] not in roles:
            raise SystemExit(
                f"ClusterRoleBinding {obj['metadata']['name']} binds {obj['roleRef']['name']}, which the "
                f"operator does not render: the CSV must hold that role's rules too"
            )
    grants: list[Grant] = []
    for obj in objects:
        if obj["kind"] != "ClusterRole":
            continue
        for rule in obj.get("rules") or []:
            for group in rule["apiGroups"]:
                grants.append(
                    Grant(
                        group,
                        tuple(rule["resources"]),
                        tuple(rule["verbs"]),
                        f"granted onwards in ClusterRole {obj['metadata']['name']}",
                        tuple(rule.get("resourceNames") or ()),
                    )
                )
    return grants


def covers(big: Grant, small: Grant) -> bool:
    """Whether `big` allows everything `small` does (a rule without resourceNames allows every name)."""
    if big.resource_names and not (
        small.resource_names and set(small.resource_names) <= set(big.resource_names)
    ):
        return False
    return (
        big.group == small.group
        and set(small.resources) <= set(big.resources)
        and set(small.verbs) <= set(big.verbs)
    )


def atoms(rule: Mapping[str, Any]) -> list[Grant]:
    """A rule split into one Grant per (group, resource, verb)."""
    names_ = tuple(sorted(rule.get("resourceNames") or ()))
    return [
        Grant(group, (resource,), (verb,), "", names_)
        for group in rule.get("apiGroups") or ()
        for resource in rule.get("resources") or ()
        for verb in rule.get("verbs") or ()
    ]


@dataclass(frozen=True)
class OperatorRbac:
    """The operator's rules as assets/operator/rbac.yaml states them (the CSV's only source)."""

    cluster_rules: list[Obj]
    namespace_rules: list[Obj]

    @classmethod
    def load(cls, root: Path) -> OperatorRbac:
        document = yaml.safe_load((root / RBAC_SOURCE).read_text())
        items = document["items"] if document.get("kind") == "List" else [document]
        by_kind: dict[str, list[Obj]] = {"ClusterRole": [], "Role": []}
        for item in items:
            if item.get("kind") not in by_kind:
                raise SystemExit(f"{RBAC_SOURCE}: unexpected {item.get('kind')}; only ClusterRole and Role")
            by_kind[item["kind"]].extend(item.get("rules") or [])
        return cls(by_kind["ClusterRole"], by_kind["Role"])

    def missing(self, cluster: Sequence[Grant], namespaced: Sequence[Grant]) -> list[str]:
        """Required grants no rule allows: cluster-wide ones need a ClusterRole rule."""
        cluster_atoms = [a for rule in self.cluster_rules for a in atoms(rule)]
        namespace_atoms = cluster_atoms + [a for rule in self.namespace_rules for a in atoms(rule)]
        out: list[str] = []
        for grants, available, scope in (
            (cluster, cluster_atoms, "cluster-wide"),
            (namespaced, namespace_atoms, "in the operator's namespace"),
        ):
            for grant in grants:
                for need in atoms(grant.rule()):
                    if not any(covers(have, need) for have in available):
                        out.append(f"{scope}: {_describe(need)} ({grant.reason})")
        return out

    def unexplained(self, cluster: Sequence[Grant], namespaced: Sequence[Grant]) -> list[str]:
        """Granted atoms that no derived need accounts for (candidates for removal)."""
        out: list[str] = []
        for rules, needs, scope in (
            (self.cluster_rules, cluster, "ClusterRole"),
            (self.namespace_rules, namespaced, "Role"),
        ):
            need_atoms = [a for grant in needs for a in atoms(grant.rule())]
            for rule in rules:
                out += [
                    f"{scope}: {_describe(a)}"
                    for a in atoms(rule)
                    if not any(covers(a, n) for n in need_atoms)
                ]
        return out


def _describe(atom: Grant) -> str:
    where = f"{atom.group or 'core'}/{atom.resources[0]}"
    if atom.resource_names:
        where += f" {list(atom.resource_names)}"
    return f"{atom.verbs[0]} {where}"


# --- CSV ----------------------------------------------------------------------------------------


def read_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    assert isinstance(version, str)
    return version


@dataclass(frozen=True)
class Images:
    operator: str
    driver: str
    node_driver_registrar: str
    liveness_probe: str

    @classmethod
    def for_version(cls, version: str) -> Images:
        return cls(
            operator=f"{REGISTRY}/operator:v{version}",
            driver=f"{REGISTRY}/driver:v{version}",
            node_driver_registrar=settings.DEFAULT_REGISTRAR_IMAGE,
            liveness_probe=settings.DEFAULT_LIVENESS_PROBE_IMAGE,
        )

    def related(self) -> list[Obj]:
        return [
            {"name": "operator", "image": self.operator},
            {"name": "driver", "image": self.driver},
            {"name": "node-driver-registrar", "image": self.node_driver_registrar},
            {"name": "livenessprobe", "image": self.liveness_probe},
        ]


def operator_deployment(images: Images) -> Obj:
    labels = {"app.kubernetes.io/name": OPERATOR_DEPLOYMENT, "app.kubernetes.io/part-of": PACKAGE}
    probe = {
        "httpGet": {"path": "/healthz", "port": "healthz"},
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    container: Obj = {
        "name": "operator",
        "image": images.operator,
        "imagePullPolicy": "IfNotPresent",
        "args": [f"--liveness=http://0.0.0.0:{HEALTH_PORT}/healthz"],
        # Exactly the variables sscsi_operator.settings reads; OLM substitutes the images when mirroring.
        "env": [
            {"name": "DRIVER_IMAGE", "value": images.driver},
            {"name": "NODE_DRIVER_REGISTRAR_IMAGE", "value": images.node_driver_registrar},
            {"name": "LIVENESS_PROBE_IMAGE", "value": images.liveness_probe},
            # The driver's namespaced objects go where the operator runs (the permissions' Role).
            {
                "name": "OPERATOR_NAMESPACE",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
            },
        ],
        "ports": [{"name": "healthz", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "livenessProbe": {**probe, "initialDelaySeconds": 15},
        "readinessProbe": {**probe, "initialDelaySeconds": 5, "periodSeconds": 10},
        # Measured: ~58 MiB RSS while installing and removing the driver (Python 3.11, kopf).
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "name": OPERATOR_DEPLOYMENT,
        "label": labels,
        "spec": {
            "replicas": 1,
            # One kopf operator runs standalone (no peering): never two at once, even for an upgrade.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_DEPLOYMENT}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"kubectl.kubernetes.io/default-container": "operator"},
                },
                "spec": {
                    "serviceAccountName": OPERATOR_SERVICE_ACCOUNT,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}],
                },
            },
        },
    }


def _schema_path(crd: Obj, version: str, root: str, path: str) -> list[Obj]:
    """The schema nodes from `root` down to `path` (dotted), or exit naming the missing field."""
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    nodes: list[Obj] = [served[version]["schema"]["openAPIV3Schema"]["properties"][root]]
    for step in path.split("."):
        properties = nodes[-1].get("properties") or {}
        if step not in properties:
            raise SystemExit(f"{crd['metadata']['name']}: no field {root}.{path} for a descriptor")
        nodes.append(properties[step])
    return nodes


_TYPE_DESCRIPTORS = {
    "boolean": "urn:alm:descriptor:com.tectonic.ui:booleanSwitch",
    "integer": "urn:alm:descriptor:com.tectonic.ui:number",
    "string": "urn:alm:descriptor:com.tectonic.ui:text",
}


def descriptors(
    crd: Obj, version: str, root: str, table: Sequence[tuple[str, str, tuple[str, ...]]]
) -> list[Obj]:
    out: list[Obj] = []
    for path, display, extra in table:
        nodes = _schema_path(crd, version, root, path)
        schema = nodes[-1]
        derived: list[str] = []
        if root == "spec":
            if "enum" in schema:
                derived = [f"urn:alm:descriptor:com.tectonic.ui:select:{value}" for value in schema["enum"]]
            elif schema.get("type") in _TYPE_DESCRIPTORS:
                derived = [_TYPE_DESCRIPTORS[schema["type"]]]
        # A discriminator such as `type` or a switch such as `enabled` is explained by its parent.
        description = next((str(n["description"]) for n in reversed(nodes) if n.get("description")), display)
        descriptor: Obj = {"path": path, "displayName": display, "description": " ".join(description.split())}
        if derived or extra:
            descriptor["x-descriptors"] = derived + list(extra)
        out.append(descriptor)
    return out


def owned_crd(crd: Obj, rendered: Sequence[Obj]) -> Obj:
    kind = crd["spec"]["names"]["kind"]
    storage = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
    display, description = CRD_TEXT[kind]
    entry: Obj = {
        "name": crd["metadata"]["name"],
        "version": storage,
        "kind": kind,
        "displayName": display,
        "description": description,
    }
    if kind == names.KIND:
        children = sorted(
            {(o["kind"], o["metadata"]["name"], o["apiVersion"].rpartition("/")[2]) for o in rendered}
        )
        entry["resources"] = [{"kind": k, "name": n, "version": v} for k, n, v in children]
    if kind in SPEC_DESCRIPTORS:
        entry["specDescriptors"] = descriptors(crd, storage, "spec", SPEC_DESCRIPTORS[kind])
    if kind in STATUS_DESCRIPTORS:
        entry["statusDescriptors"] = descriptors(crd, storage, "status", STATUS_DESCRIPTORS[kind])
    return entry


def examples() -> list[Obj]:
    return [
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": names.SINGLETON},
            "spec": {
                "managementState": "Managed",
                "logLevel": "Normal",
                "operatorLogLevel": "Normal",
                "driverConfig": {
                    "driverType": "SecretsStore",
                    "secretsStore": {
                        "secretRotation": {"type": "Custom", "custom": {"minimumRefreshAge": 120}},
                        "syncSecret": {"enabled": True},
                    },
                },
            },
        },
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "app-secrets", "namespace": "default"},
            "spec": {
                "provider": "vault",
                "parameters": {
                    "roleName": "app",
                    "vaultAddress": "https://vault.example.com:8200",
                    "objects": '- objectName: "db-password"\n  secretPath: "secret/data/app"\n'
                    '  secretKey: "password"\n',
                },
                "secretObjects": [
                    {
                        "secretName": "app-db",
                        "type": "Opaque",
                        "data": [{"objectName": "db-password", "key": "password"}],
                    }
                ],
            },
        },
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {"name": "app-0-default-app-secrets", "namespace": "default"},
            "status": {
                "podName": "app-0",
                "secretProviderClassName": "app-secrets",
                "mounted": True,
                "targetPath": "/var/lib/kubelet/pods/<pod-uid>/volumes/kubernetes.io~csi/secrets/mount",
                "objects": [{"id": "db-password", "version": "1"}],
            },
        },
    ]


def cluster_service_version(
    version: str, crds: Sequence[Obj], rendered: Sequence[Obj], rbac: OperatorRbac
) -> Obj:
    images = Images.for_version(version)
    cluster, namespaced = operator_grants()
    cluster += escalation_grants(rendered)
    missing = rbac.missing(cluster, namespaced)
    if missing:
        raise SystemExit(f"{RBAC_SOURCE} lacks rules the operator needs:\n  " + "\n  ".join(missing))
    for note in rbac.unexplained(cluster, namespaced):
        print(
            f"note: {RBAC_SOURCE} grants {note}, which no known operator call or driver role needs",
            file=sys.stderr,
        )
    icon = base64.b64encode(ICON_SVG.encode()).decode()
    namespace_template = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": SUGGESTED_NAMESPACE,
            "labels": {
                # The node plugin is privileged: it mounts tmpfs into kubelet's pod directories.
                "pod-security.kubernetes.io/enforce": "privileged",
                "pod-security.kubernetes.io/audit": "privileged",
                "pod-security.kubernetes.io/warn": "privileged",
            },
        },
    }
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": f"{PACKAGE}.v{version}",
            "annotations": {
                "alm-examples": json.dumps(examples(), indent=2, sort_keys=True),
                "capabilities": "Seamless Upgrades",
                "categories": "Security",
                "containerImage": images.operator,
                "description": "Mount secrets from external stores into pods as files, through CSI.",
                "olm.skipRange": skip_range(version),
                "operatorframework.io/suggested-namespace": SUGGESTED_NAMESPACE,
                "operatorframework.io/suggested-namespace-template": json.dumps(
                    namespace_template, sort_keys=True
                ),
                "operators.operatorframework.io/internal-objects": json.dumps(
                    ["secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"]
                ),
                "repository": PROJECT_URL,
                "support": MAINTAINER["name"],
            },
            "labels": {
                "operatorframework.io/arch.amd64": "supported",
                "operatorframework.io/os.linux": "supported",
            },
        },
        "spec": {
            "displayName": DISPLAY_NAME,
            "description": CSV_DESCRIPTION,
            "version": version,
            "minKubeVersion": MIN_KUBE_VERSION,
            "keywords": ["secrets", "csi", "secrets-store", "vault", "security", "storage"],
            "maintainers": [MAINTAINER],
            "provider": {"name": "secrets-store-csi-py", "url": PROJECT_URL},
            "links": [
                {"name": "Source Code", "url": PROJECT_URL},
                {"name": "Secrets Store CSI Driver", "url": "https://secrets-store-csi-driver.sigs.k8s.io/"},
            ],
            "icon": [{"base64data": icon, "mediatype": "image/svg+xml"}],
            # One cluster-wide installation: the operator serves a cluster-scoped singleton and the
            # driver serves pods in every namespace, so it is installed once, for all namespaces.
            "installModes": [
                {"type": "OwnNamespace", "supported": False},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": True},
            ],
            "customresourcedefinitions": {
                "owned": sorted((owned_crd(crd, rendered) for crd in crds), key=lambda e: e["name"]),
            },
            "install": {
                "strategy": "deployment",
                "spec": {
                    "deployments": [operator_deployment(images)],
                    "clusterPermissions": [
                        {"serviceAccountName": OPERATOR_SERVICE_ACCOUNT, "rules": rbac.cluster_rules}
                    ],
                    "permissions": [
                        {"serviceAccountName": OPERATOR_SERVICE_ACCOUNT, "rules": rbac.namespace_rules}
                    ],
                },
            },
            "relatedImages": images.related(),
        },
    }


# --- files --------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (descriptions, alm-examples); no anchors or aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(
        obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1000, allow_unicode=True
    )


def dump_yaml_all(objs: Sequence[Any]) -> str:
    return "---\n".join(dump_yaml(obj) for obj in objs)


def bundle_annotations() -> dict[str, str]:
    return {
        "operators.operatorframework.io.bundle.channel.default.v1": DEFAULT_CHANNEL,
        "operators.operatorframework.io.bundle.channels.v1": ",".join(CHANNELS),
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
    }


def bundle_dockerfile(version: str) -> str:
    lines = [
        "# The OLM bundle image (generated by hack/gen-bundle.py; build from the repository root).",
        "FROM scratch",
        "",
        *(f"LABEL {key}={value}" for key, value in bundle_annotations().items()),
        f"LABEL org.opencontainers.image.title={PACKAGE}-bundle org.opencontainers.image.version={version}",
        "",
        "COPY bundle/manifests /manifests/",
        "COPY bundle/metadata /metadata/",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Tools:
    opm: Path
    opm_image: str
    log: list[str] = field(default_factory=list)

    def opm_run(self, *args: str, cwd: Path | None = None) -> str:
        command = [str(self.opm), *args]
        self.log.append(" ".join(command))
        out = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({out.returncode}):\n{out.stderr.strip()}")
        return out.stdout


def semver_key(version: str) -> tuple[tuple[int, ...], bool, str]:
    """Order semantic versions: numerically, a pre-release before its release."""
    core, _, pre = version.partition("+")[0].partition("-")
    return tuple(int(part) for part in core.split(".")), pre == "", pre


def _bundle_version(bundle: Mapping[str, Any]) -> str:
    for prop in bundle.get("properties") or []:
        if prop.get("type") == "olm.package":
            return str(prop["value"]["version"])
    raise SystemExit(f"catalog bundle {bundle.get('name')} has no olm.package property")


def previous_releases(catalog_file: Path, csv_name: str) -> tuple[list[Obj], dict[str, list[Obj]]]:
    """The bundles and channel entries of other versions already in the committed catalog.

    The catalog accumulates releases: each new version is added next to the older ones, so that
    subscriptions on an older version find their upgrade edge.
    """
    if not catalog_file.is_file():
        return [], {}
    docs = [doc for doc in yaml.safe_load_all(catalog_file.read_text()) if doc]
    bundles = [d for d in docs if d.get("schema") == "olm.bundle" and d.get("name") != csv_name]
    entries = {
        d["name"]: [e for e in d.get("entries") or [] if e.get("name") != csv_name]
        for d in docs
        if d.get("schema") == "olm.channel"
    }
    return bundles, entries


def channel_entry(version: str, csv_name: str, earlier: Sequence[Obj], versions: Mapping[str, str]) -> Obj:
    """The new version's entry: it replaces the newest earlier entry and skips every older version."""
    entry: Obj = {"name": csv_name, "skipRange": skip_range(version)}
    older = [e for e in earlier if semver_key(versions[e["name"]]) < semver_key(version)]
    if older:
        entry["replaces"] = max(older, key=lambda e: semver_key(versions[e["name"]]))["name"]
    return entry


def catalog(tools: Tools, version: str, bundle_dir: Path, work: Path, committed: Path) -> str:
    """The package's file-based catalog, made by opm from the bundle directory.

    olm.package from `opm init`, olm.bundle from `opm render` of the bundle directory, one entry per
    channel next to the releases the committed catalog already has; then `opm render` of that catalog
    migrates the bundle's manifests to olm.csv.metadata (a smaller, reviewable catalog: OLM installs
    from the bundle image either way).
    """
    icon = work / "icon.svg"
    icon.write_text(ICON_SVG)
    readme = work / "README.md"
    readme.write_text(PACKAGE_DESCRIPTION)
    package = yaml.safe_load(
        tools.opm_run(
            "init",
            PACKAGE,
            f"--default-channel={DEFAULT_CHANNEL}",
            f"--icon={icon}",
            f"--description={readme}",
            "--output=yaml",
        )
    )
    rendered = tools.opm_run("render", str(bundle_dir), "--output=yaml")
    bundles = [doc for doc in yaml.safe_load_all(rendered) if doc]
    if len(bundles) != 1 or bundles[0].get("schema") != "olm.bundle":
        raise SystemExit(f"opm render {bundle_dir}: expected one olm.bundle, got {len(bundles)} documents")
    bundle = bundles[0]
    csv_name = f"{PACKAGE}.v{version}"
    if bundle["name"] != csv_name:
        raise SystemExit(f"opm render named the bundle {bundle['name']}, expected {csv_name}")
    # A bundle directory has no image reference; the catalog points at the published bundle image.
    bundle["image"] = bundle_image(version)
    old_bundles, old_entries = previous_releases(committed, csv_name)
    versions = {b["name"]: _bundle_version(b) for b in old_bundles} | {csv_name: version}
    channels: list[Obj] = []
    for channel in sorted(set(CHANNELS) | set(old_entries)):
        earlier = old_entries.get(channel, [])
        entries = (
            [*earlier, channel_entry(version, csv_name, earlier, versions)]
            if channel in CHANNELS
            else earlier
        )
        entries.sort(key=lambda e: semver_key(versions[e["name"]]))
        channels.append({"schema": "olm.channel", "package": PACKAGE, "name": channel, "entries": entries})
    draft = work / "draft" / PACKAGE / "catalog.yaml"
    draft.parent.mkdir(parents=True)
    draft.write_text(dump_yaml_all([package, *channels, *old_bundles, bundle]))
    migrated = tools.opm_run(
        "render", str(draft.parent.parent), "--migrate-level=bundle-object-to-csv-metadata", "--output=yaml"
    )
    # opm starts the stream with a document marker; after the comment it would open an empty document.
    body = migrated.removeprefix("---\n")
    return "# Generated by hack/gen-bundle.py (make bundle) with opm; do not edit.\n" + body


def bundle_image(version: str) -> str:
    return f"{REGISTRY}/operator-bundle:v{version}"


def skip_range(version: str) -> str:
    """Any earlier version upgrades straight to this one."""
    return f">=0.0.0 <{version}"


def generate(root: Path, tools: Tools) -> dict[Path, bytes]:
    """Every generated file, by path relative to the repository root."""
    version = read_version(root)
    files: dict[Path, bytes] = {}
    crds: list[Obj] = []
    for source_dir in CRD_SOURCES:
        for path in sorted((root / source_dir).glob("*.yaml")):
            document = yaml.safe_load(path.read_text())
            if document.get("kind") != "CustomResourceDefinition":
                continue
            files[MANIFESTS_DIR / path.name] = path.read_bytes()  # one source: copied, never edited
            crds.append(document)
    rendered = rendered_objects()
    csv = cluster_service_version(version, crds, rendered, OperatorRbac.load(root))
    files[CSV_FILE] = dump_yaml(csv).encode()
    files[METADATA_DIR / "annotations.yaml"] = dump_yaml({"annotations": bundle_annotations()}).encode()
    files[Path("bundle.Dockerfile")] = bundle_dockerfile(version).encode()

    with tempfile.TemporaryDirectory(prefix="sscsi-bundle-") as tmp:
        work = Path(tmp)
        write_tree(work, files)
        catalog_text = catalog(tools, version, work / BUNDLE_DIR, work, root / CATALOG_FILE)
        files[CATALOG_FILE] = catalog_text.encode()
        write_tree(work, {CATALOG_FILE: files[CATALOG_FILE]})
        tools.opm_run("validate", str(work / CATALOG_ROOT))
        # `opm generate dockerfile catalog` writes catalog.Dockerfile next to the directory.
        tools.opm_run(
            "generate",
            "dockerfile",
            CATALOG_ROOT.name,
            f"--base-image={tools.opm_image}",
            f"--builder-image={tools.opm_image}",
            cwd=work,
        )
        files[Path("catalog.Dockerfile")] = (work / "catalog.Dockerfile").read_bytes()
    return files


def write_tree(root: Path, files: Mapping[Path, bytes]) -> None:
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def stale_files(root: Path, files: Mapping[Path, bytes]) -> list[Path]:
    """Files under the generated directories that the generator did not write."""
    found = {p.relative_to(root) for d in OWNED_DIRS if (root / d).is_dir() for p in (root / d).rglob("*")}
    return sorted(p for p in found if (root / p).is_file() and p not in files)


def differences(root: Path, files: Mapping[Path, bytes]) -> list[str]:
    changed = [
        f"changed: {p}"
        for p, content in sorted(files.items())
        if not (root / p).is_file() or (root / p).read_bytes() != content
    ]
    return changed + [f"stale: {p}" for p in stale_files(root, files)]


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def default_tools(root: Path) -> Tools:
    versions = read_env(root / "hack" / "versions.env")
    opm = Path(versions["TOOLS_CACHE"]) / "tools" / "bin" / "opm"
    found = shutil.which("opm")
    if not opm.is_file() and found:
        opm = Path(found)
    if not opm.is_file():
        raise SystemExit(f"opm not found at {opm}: run `hack/build-tools.sh olm`")
    return Tools(opm=opm, opm_image=f"quay.io/operator-framework/opm:{versions['OPM_VERSION']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when the committed files are stale")
    opts = parser.parse_args(argv)
    root = ROOT
    files = generate(root, default_tools(root))
    if opts.check:
        problems = differences(root, files)
        if problems:
            print(
                "the OLM bundle/catalog is stale; run `make bundle`:", *problems, sep="\n  ", file=sys.stderr
            )
            return 1
        print("bundle and catalog are up to date")
        return 0
    for path in stale_files(root, files):
        (root / path).unlink()
    write_tree(root, files)
    for path in sorted(files):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
