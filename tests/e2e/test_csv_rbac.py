"""The CSV's RBAC is sufficient and minimal, proven on the real control plane.

The operator runs as a ServiceAccount that holds exactly the generated CSV's `clusterPermissions`
(a ClusterRole + ClusterRoleBinding) and `permissions` (a Role + RoleBinding in its namespace), the way
OLM would install it, with the CSV Deployment's arguments and environment. It goes through install,
drift repair and removal. Then the apiserver's audit log of that ServiceAccount proves:

- sufficient: no request was refused, and every request is allowed by a CSV rule;
- minimal: every (apiGroup, resource, verb) the CSV grants was used by a request, or is needed because
  a ClusterRole the operator created contains it (RBAC lets a subject create a role only with rules it
  holds itself; the CSV has no `escalate`/`bind`), or is in ALLOWED_UNUSED with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import REPO_ROOT, Cluster
from harness.audit_log import requests_by
from harness.processes import free_port
from operator_fixtures import (
    CR_NAME,
    CR_RESOURCE,
    KWOK_LABEL,
    OPERATOR_BIN,
    OperatorProcess,
    kubectl_json,
    kwok_nodes,
    must,
    operator_crds,
    release_cr,
    remove_leftovers,
    wait_until,
)
from restart_rbac_phase import exercise_restart_on_rotation

__all__ = ["kwok_nodes", "operator_crds"]  # fixtures, imported for pytest

CSV_FILE = REPO_ROOT / "bundle" / "manifests" / "secrets-store-csi-py.clusterserviceversion.yaml"
MANAGED = "app.kubernetes.io/managed-by=secrets-store-csi-operator"
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"
PROMETHEUS_RULE_CRD = "prometheusrules.monitoring.coreos.com"

# (apiGroup, resource, verb) the CSV may grant although this run does not exercise it, and why.
# Keep it short: every entry is a permission the test cannot prove is needed.
ALLOWED_UNUSED: Mapping[tuple[str, str, str], str] = {}


@dataclass(frozen=True, order=True)
class Permission:
    """One (apiGroup, resource, verb) of one CSV rule; `namespaced` for the `permissions` Role."""

    namespaced: bool
    group: str
    resource: str
    verb: str
    names: tuple[str, ...] = ()

    def allows(self, request: Request, operator_namespace: str) -> bool:
        if self.namespaced and request.namespace != operator_namespace:
            return False
        return (
            self.group in ("*", request.group)
            and self.resource in ("*", request.resource)
            and self.verb in ("*", *request.verbs)
            and (not self.names or request.name in self.names)
        )

    def covers(self, needed: Permission) -> bool:
        """Whether holding this lets the operator create a ClusterRole that contains `needed`."""
        return (
            not self.namespaced
            and self.group in ("*", needed.group)
            and self.resource in ("*", needed.resource)
            and self.verb in ("*", needed.verb)
            and (not self.names or (bool(needed.names) and set(needed.names) <= set(self.names)))
        )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)

    def __str__(self) -> str:
        scope = "Role" if self.namespaced else "ClusterRole"
        names = f" {list(self.names)}" if self.names else ""
        return f"{scope}: {self.verb} {self.group or 'core'}/{self.resource}{names}"


def expand(rules: Iterable[Mapping[str, Any]], namespaced: bool) -> list[Permission]:
    return sorted(
        {
            Permission(namespaced, group, resource, verb, tuple(sorted(rule.get("resourceNames") or ())))
            for rule in rules
            for group in rule.get("apiGroups") or ()
            for resource in rule.get("resources") or ()
            for verb in rule.get("verbs") or ()
        }
    )


@dataclass(frozen=True)
class Request:
    """One audited API request of the operator (resource requests only)."""

    verb: str
    group: str
    resource: str  # with "/subresource"
    namespace: str
    name: str
    code: int
    decision: str
    uri: str

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Request | None:
        ref = event.get("objectRef")
        if not ref or not ref.get("resource"):
            return None  # a non-resource URL (discovery), authorized for every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        return cls(
            verb=event["verb"],
            group=ref.get("apiGroup") or "",
            resource=resource,
            namespace=ref.get("namespace") or "",
            name=ref.get("name") or "",
            code=int((event.get("responseStatus") or {}).get("code") or 0),
            decision=(event.get("annotations") or {}).get("authorization.k8s.io/decision", ""),
            uri=event.get("requestURI", ""),
        )

    @property
    def verbs(self) -> tuple[str, ...]:
        """The verbs RBAC checked: a patch (server-side apply) that creates is authorized as create too."""
        if self.verb in ("patch", "update") and self.code == 201:
            return (self.verb, "create")
        return (self.verb,)


@dataclass(frozen=True)
class CsvInstall:
    """What OLM would create from the CSV, plus how to run its Deployment's container here."""

    namespace: str
    username: str
    permissions: list[Permission]
    example: dict[str, Any]
    process: OperatorProcess
    started: float
    kubeconfig: Path


def load_csv() -> dict[str, Any]:
    if not CSV_FILE.is_file():
        pytest.fail(f"{CSV_FILE} is missing: run `make bundle`", pytrace=False)
    csv: dict[str, Any] = yaml.safe_load(CSV_FILE.read_text())
    return csv


def _kubeconfig_for(cluster: Cluster, namespace: str, service_account: str, path: Path) -> None:
    """A kubeconfig that authenticates with a bound token of the ServiceAccount (TokenRequest API)."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    [cluster_entry] = admin["clusters"]
    token = must(cluster.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h")).stdout
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sscsi", "cluster": cluster_entry["cluster"]}],
        "users": [{"name": service_account, "user": {"token": token.strip()}}],
        "contexts": [{"name": "csv", "context": {"cluster": "sscsi", "user": service_account}}],
        "current-context": "csv",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _container_env(container: Mapping[str, Any], namespace: str) -> dict[str, str]:
    """The container's env as the kubelet would set it: $(VAR) expanded from the variables defined
    before it (DRIVER_IMAGE=$(RELATED_IMAGE_DRIVER)), the downward API's metadata.namespace."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda ref: env.get(ref.group(1), ref.group(0)),
                var["value"],
            )
            continue
        field_path = var["valueFrom"]["fieldRef"]["fieldPath"]
        assert field_path == "metadata.namespace", f"{var['name']}: no stand-in for {field_path} here"
        env[var["name"]] = namespace
    return env


@pytest.fixture
def service_monitor_api(cluster: Cluster) -> Iterator[None]:
    """The ServiceMonitor and PrometheusRule APIs (stand-ins for the Prometheus Operator's CRDs), so
    that the operator's monitoring paths and their permissions run too. Removed afterwards when this
    fixture added them."""
    added: list[str] = []
    for name, kind in ((SERVICE_MONITOR_CRD, "ServiceMonitor"), (PROMETHEUS_RULE_CRD, "PrometheusRule")):
        if kubectl_json(cluster, "crd", name) is not None:
            continue
        plural = name.split(".")[0]
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "labels": {"sscsi.test/stand-in": "true"}},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                                },
                            }
                        },
                    }
                ],
            },
        }
        cluster.apply(crd)
        added.append(name)
        must(cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s"))
    try:
        yield
    finally:
        for name in added:
            cluster.kubectl("delete", "crd", name, "--ignore-not-found", "--timeout=60s")


@pytest.fixture
def csv_install(
    cluster: Cluster,
    namespace: str,
    kwok_nodes: tuple[str, ...],
    operator_crds: None,
    service_monitor_api: None,
) -> Iterator[CsvInstall]:
    """The CSV's ServiceAccount, RBAC and Deployment container, as OLM would install them in `namespace`."""
    remove_leftovers(cluster)
    csv = load_csv()
    install = csv["spec"]["install"]["spec"]
    [deployment] = install["deployments"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    service_account = pod["serviceAccountName"]
    for entry in (*install["clusterPermissions"], *install["permissions"]):
        assert entry["serviceAccountName"] == service_account
    cluster_rules = [rule for entry in install["clusterPermissions"] for rule in entry["rules"]]
    namespace_rules = [rule for entry in install["permissions"] for rule in entry["rules"]]
    name = f"sscsi-csv-{namespace}"
    subject = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]

    def role_ref(kind: str) -> dict[str, str]:
        return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}

    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name},
                "rules": namespace_rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": role_ref("Role"),
                "subjects": subject,
            },
        ],
        namespace=namespace,
    )
    cluster.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": cluster_rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": role_ref("ClusterRole"),
                "subjects": subject,
            },
        ]
    )
    workdir = cluster.logs_dir / "csv-rbac"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "operator.kubeconfig"
    _kubeconfig_for(cluster, namespace, service_account, kubeconfig)

    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    args = [arg for arg in container.get("args") or [] if not arg.startswith("--liveness=")]
    assert len(args) < len(container.get("args") or []), "the CSV's container sets --liveness for its probes"
    # Nothing from this shell may steer the operator: only the CSV's environment (and a PATH).
    steering = {
        "KUBECONFIG",
        "OPERAND_NAMESPACE",
        "OPERATOR_NAMESPACE",
        "POD_NAMESPACE",
        "SSCSI_OPERATOR_TEMPLATES",
    }
    env = {key: value for key, value in os.environ.items() if key not in steering}
    env |= _container_env(container, namespace)
    process = OperatorProcess(
        argv=[str(OPERATOR_BIN), *args, f"--liveness={liveness}", f"--kubeconfig={kubeconfig}"],
        env=env,
        log_path=workdir / "operator.log",
        liveness_url=liveness,
    )
    process.log_path.unlink(missing_ok=True)
    started = time.time() - 1
    process.start()
    [example] = [
        e
        for e in json.loads(csv["metadata"]["annotations"]["alm-examples"])
        if e["kind"] == "ClusterCSIDriver"
    ]
    try:
        yield CsvInstall(
            namespace=namespace,
            username=f"system:serviceaccount:{namespace}:{service_account}",
            permissions=expand(cluster_rules, namespaced=False) + expand(namespace_rules, namespaced=True),
            example=example,
            process=process,
            started=started,
            kubeconfig=kubeconfig,
        )
    finally:
        try:
            release_cr(cluster, process)
        finally:
            process.stop()
            remove_leftovers(cluster)
            cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found")


def _resource(kind: str) -> str:
    return {
        "CSIDriver": "csidrivers.storage.k8s.io",
        "ClusterRole": "clusterroles.rbac.authorization.k8s.io",
        "ClusterRoleBinding": "clusterrolebindings.rbac.authorization.k8s.io",
        "DaemonSet": "daemonsets.apps",
        "Service": "services",
        "ServiceAccount": "serviceaccounts",
        "ServiceMonitor": SERVICE_MONITOR_CRD,
        "ValidatingAdmissionPolicy": "validatingadmissionpolicies.admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings.admissionregistration.k8s.io",
        "PrometheusRule": PROMETHEUS_RULE_CRD,
    }[kind]


CLUSTER_SCOPED = {
    "CSIDriver",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def _get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    scope = [] if kind in CLUSTER_SCOPED else ["-n", namespace]
    return kubectl_json(cluster, _resource(kind), name, *scope)


def _condition(cr: Mapping[str, Any] | None, kind: str) -> str | None:
    for condition in (cr or {}).get("status", {}).get("conditions") or []:
        if condition["type"] == kind:
            return str(condition["status"])
    return None


def permission_usage(
    requests: Sequence[Request],
    permissions: Sequence[Permission],
    operator_namespace: str,
    granted_to_others: Sequence[Permission],
) -> tuple[list[str], list[str]]:
    """(a line per permission saying why it is needed, the permissions nothing accounts for)."""
    usage: Counter[Permission] = Counter(
        p for r in requests for p in permissions if p.allows(r, operator_namespace)
    )
    report: list[str] = []
    unused: list[str] = []
    for permission in permissions:
        if usage[permission]:
            report.append(f"{permission}: {usage[permission]} requests")
        elif any(permission.covers(needed) for needed in granted_to_others):
            report.append(f"{permission}: held to grant it in the operator's ClusterRoles (escalation check)")
        elif permission.key in ALLOWED_UNUSED:
            report.append(f"{permission}: unused here; {ALLOWED_UNUSED[permission.key]}")
        else:
            unused.append(str(permission))
            report.append(f"{permission}: UNUSED")
    return report, unused


def test_the_operator_needs_every_csv_permission_and_no_other(
    cluster: Cluster, csv_install: CsvInstall
) -> None:
    install = csv_install
    namespace = install.namespace
    csv = load_csv()
    [owned] = [
        c for c in csv["spec"]["customresourcedefinitions"]["owned"] if c["kind"] == "ClusterCSIDriver"
    ]
    children = [(r["kind"], r["name"]) for r in owned["resources"]]
    [deployment] = csv["spec"]["install"]["spec"]["deployments"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = _container_env(container, namespace)

    # Install: the CSV's own example, placed on the kwok nodes.
    cr = json.loads(json.dumps(install.example))
    store = cr["spec"].setdefault("driverConfig", {}).setdefault("secretsStore", {})
    store["nodePlacement"] = {"nodeSelector": {KWOK_LABEL: "true"}}
    cluster.apply(cr)

    def installed() -> bool:
        current = kubectl_json(cluster, CR_RESOURCE, CR_NAME)
        return (
            _condition(current, "Available") == "True"
            and _condition(current, "Degraded") == "False"
            and all(_get(cluster, namespace, kind, name) is not None for kind, name in children)
        )

    wait_until("every object the CSV lists for the ClusterCSIDriver, and Available", installed, timeout=90)
    daemonset = _get(cluster, namespace, "DaemonSet", "secrets-store-csi-driver-node")
    assert daemonset is not None
    images = {c["name"]: c["image"] for c in daemonset["spec"]["template"]["spec"]["containers"]}
    assert images == {
        "csi-driver": env["DRIVER_IMAGE"],
        "csi-liveness-probe": env["LIVENESS_PROBE_IMAGE"],
    }
    roles = kubectl_json(cluster, "clusterroles", "-l", MANAGED)
    assert roles is not None and roles["items"], "the operator created no ClusterRole"
    granted_to_others = [
        p for role in roles["items"] for p in expand(role.get("rules") or [], namespaced=False)
    ]

    # Restart on rotation: annotated workloads restarted by the operator (tests/e2e/restart_rbac_phase.py).
    exercise_restart_on_rotation(cluster)

    # Drift repair: the DaemonSet is deleted behind the operator's back.
    uid = daemonset["metadata"]["uid"]
    must(
        cluster.kubectl(
            "delete", "daemonset", "secrets-store-csi-driver-node", "-n", namespace, "--wait=false"
        )
    )

    def restored() -> bool:
        current = _get(cluster, namespace, "DaemonSet", "secrets-store-csi-driver-node")
        return current is not None and current["metadata"]["uid"] != uid

    wait_until("the DaemonSet to be restored", restored, timeout=60)

    # Removal: every child goes, then the operator releases the ClusterCSIDriver.
    must(cluster.kubectl("delete", CR_RESOURCE, CR_NAME, "--wait=false"))
    wait_until(
        "the ClusterCSIDriver to be released",
        lambda: kubectl_json(cluster, CR_RESOURCE, CR_NAME) is None,
        timeout=60,
    )
    leftovers = [(kind, name) for kind, name in children if _get(cluster, namespace, kind, name) is not None]
    assert leftovers == []
    install.process.stop()
    time.sleep(1)  # the audit backend writes the last watch's completion as the connection closes

    events = requests_by(cluster.logs_dir, install.username, install.started)
    requests = [r for r in map(Request.from_event, events) if r is not None]
    assert requests, f"no audit events of {install.username} in {cluster.logs_dir}"
    refused = sorted(
        {f"{r.verb} {r.uri} -> {r.code}" for r in requests if r.code == 403 or r.decision == "forbid"}
    )
    other = [e for e in events if Request.from_event(e) is None]
    refused += sorted(
        {
            f"{e['verb']} {e['requestURI']}"
            for e in other
            if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
        }
    )
    assert refused == [], "the CSV's RBAC is not sufficient:\n" + "\n".join(refused)

    permissions = install.permissions
    unmatched = sorted(
        {f"{r.verb} {r.uri}" for r in requests if not any(p.allows(r, namespace) for p in permissions)}
    )
    assert unmatched == [], "allowed by something other than the CSV's rules:\n" + "\n".join(unmatched)

    for role in roles["items"]:
        name = role["metadata"]["name"]
        assert any(
            r.resource == "clusterroles" and r.name == name and r.verb == "patch" and r.code == 201
            for r in requests
        ), f"ClusterRole {name} was not created by the operator's ServiceAccount"

    report, unused = permission_usage(requests, permissions, namespace, granted_to_others)
    (cluster.logs_dir / "csv-rbac" / "permission-usage.txt").write_text("\n".join(report) + "\n")
    granted = {p.key for p in permissions}
    stale = sorted(str(key) for key in ALLOWED_UNUSED if key not in granted)
    assert stale == [], f"ALLOWED_UNUSED names permissions the CSV does not grant: {stale}"
    assert unused == [], (
        "the CSV grants permissions the operator never used and does not grant onwards "
        "(remove them, or list them in ALLOWED_UNUSED with the reason):\n" + "\n".join(unused)
    )

    # The rules held only to be granted onwards are needed because the apiserver refuses to let the
    # operator grant what it does not hold: a role with one rule more is rejected.
    probe = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"sscsi-escalation-probe-{namespace}"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }
    out = subprocess.run(
        [
            str(cluster.kubectl_path),
            f"--kubeconfig={install.kubeconfig}",
            "create",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=json.dumps(probe),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0 and "attempting to grant RBAC permissions not currently held" in out.stderr, (
        out.stdout + out.stderr
    )
