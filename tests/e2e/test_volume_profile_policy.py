"""The ephemeral volume profile enforced by the operator's ValidatingAdmissionPolicy on the real apiserver.

Each profile x namespace level is decided as OpenShift's CSIInlineVolumeSecurity admission plugin
decides it (a pod using an inline volume of the driver is refused in a namespace whose enforced pod
security level is more restrictive than the profile), by creating pods with a server-side dry run: the
whole admission chain runs, nothing is stored. Changing the ClusterCSIDriver's profile changes the
decisions with nothing restarted; the policy is repaired when deleted and removed with the CR.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import Cluster
from operator_fixtures import (
    CR_NAME,
    CR_RESOURCE,
    RESYNC_SECONDS,
    OperatorProcess,
    kubectl_json,
    kwok_nodes,
    must,
    operator,
    operator_crds,
    wait_until,
)
from operator_state import CSIDRIVER, apply_cr, conditions, ensure_no_cr, get_cr, spec_with

__all__ = ["kwok_nodes", "operator", "operator_crds"]  # fixtures, imported for pytest

POLICY = "secrets-store-csi-driver-ephemeral-volume-profile"
REFUSED_BY_POLICY = f"ValidatingAdmissionPolicy '{POLICY}'"
FORCE_REMOVAL = "operator.secrets-store.csi.x-k8s.io/force-removal"
ENFORCE = "pod-security.kubernetes.io/enforce"
LEVELS = ("restricted", "baseline", "privileged")
# Namespace kinds under test: the three enforced levels and a namespace without the label.
NAMESPACE_KINDS = (*LEVELS, "unlabelled")
# The admission policy takes effect once the apiserver has loaded it (about a second).
DECISION_TIMEOUT = 30.0


def expected(profile: str, namespace_level: str) -> bool:
    """OpenShift's table: allowed when the namespace's level is at least as permissive as the profile."""
    return LEVELS.index(namespace_level) >= LEVELS.index(profile)


def pod(name: str = "inline") -> dict[str, Any]:
    """A pod that the restricted pod security level itself admits, with one inline volume of the driver."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "app",
                    "image": "example.invalid/app:1",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": True}],
                }
            ],
            "volumes": [
                {
                    "name": "secrets",
                    "csi": {
                        "driver": CSIDRIVER,
                        "readOnly": True,
                        "volumeAttributes": {"secretProviderClass": "app"},
                    },
                }
            ],
        },
    }


def deployment(template: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": "inline"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "inline"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        },
    }


class Decisions:
    """Creates objects with a server-side dry run and tells allowed from refused by the policy."""

    def __init__(self, cluster: Cluster, namespaces: dict[str, str]) -> None:
        self.cluster = cluster
        self.namespaces = namespaces

    def create(self, namespace: str, obj: dict[str, Any]) -> tuple[bool, str]:
        out = self.cluster.kubectl(
            "create", "-n", namespace, "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(obj)
        )
        if out.returncode == 0:
            return True, ""
        if REFUSED_BY_POLICY not in out.stderr:
            raise AssertionError(f"refused, but not by the policy: {out.stderr.strip()}")
        return False, out.stderr.strip()

    def table(self) -> dict[str, bool]:
        return {kind: self.create(ns, pod())[0] for kind, ns in self.namespaces.items()}

    def wait_for(self, want: dict[str, bool]) -> dict[str, bool]:
        seen: dict[str, bool] = {}

        def matches() -> bool:
            seen.clear()
            seen.update(self.table())
            return seen == want

        wait_until(f"the decisions {want}", matches, timeout=DECISION_TIMEOUT, interval=0.5)
        return seen


@pytest.fixture(scope="module")
def namespaces(cluster: Cluster) -> Iterator[dict[str, str]]:
    """One namespace per level (label pod-security.kubernetes.io/enforce) and one without the label."""
    suffix = secrets.token_hex(3)
    made = {kind: f"t-volume-profile-{kind}-{suffix}" for kind in NAMESPACE_KINDS}
    for kind, name in made.items():
        labels = {} if kind == "unlabelled" else {ENFORCE: kind}
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    try:
        yield made
    finally:
        cluster.kubectl("delete", "namespace", *made.values(), "--wait=false")


@pytest.fixture
def decisions(cluster: Cluster, namespaces: dict[str, str]) -> Decisions:
    return Decisions(cluster, namespaces)


def policy(cluster: Cluster) -> dict[str, Any] | None:
    return kubectl_json(cluster, "validatingadmissionpolicy", POLICY)


def binding(cluster: Cluster) -> dict[str, Any] | None:
    return kubectl_json(cluster, "validatingadmissionpolicybinding", POLICY)


def policy_profile(cluster: Cluster) -> str | None:
    found = policy(cluster)
    variables = {v["name"]: v["expression"] for v in (found or {}).get("spec", {}).get("variables") or []}
    profile = variables.get("profile")
    return None if profile is None else str(profile).strip("'\"")


def set_profile(cluster: Cluster, profile: str, **store: str) -> None:
    """Apply the CR with this profile; wait for the policy to carry it and the condition to say so."""
    apply_cr(cluster, spec_with(store={"ephemeralVolumeProfile": profile, **store}))

    def reported() -> bool:
        condition = conditions(get_cr(cluster)).get("EphemeralVolumeProfileEnforced", {})
        return (
            policy_profile(cluster) == profile
            and condition.get("status") == "True"
            and condition.get("reason") == "ValidatingAdmissionPolicy"
            and f"profile {profile}" in condition.get("message", "")
            and all(f"count as {level}" in condition.get("message", "") for level in store.values())
        )

    wait_until(f"the policy and the CR's condition to carry profile {profile}", reported, timeout=60)


@pytest.mark.parametrize("profile", LEVELS)
def test_each_profile_against_each_namespace_level(
    cluster: Cluster, operator: OperatorProcess, decisions: Decisions, profile: str
) -> None:
    set_profile(cluster, profile)
    want = {level: expected(profile, level) for level in LEVELS} | {"unlabelled": True}
    assert decisions.wait_for(want) == want

    for level in LEVELS:
        allowed, message = decisions.create(decisions.namespaces[level], pod())
        assert allowed is want[level]
        if not allowed:  # names the profile, the namespace's level and both ways out
            namespace = decisions.namespaces[level]
            assert f"need a namespace that enforces pod security level {profile}" in message
            assert f"namespace {namespace} enforces {level}" in message
            assert f"{ENFORCE}={profile}" in message
            assert "spec.driverConfig.secretsStore.ephemeralVolumeProfile" in message
        # A workload's pod template is decided as the pods it would create (OpenShift does the same).
        workload_allowed, _ = decisions.create(decisions.namespaces[level], deployment(pod()))
        assert workload_allowed is want[level]


def test_unlabelled_namespaces_count_as_the_configured_default(
    cluster: Cluster, operator: OperatorProcess, decisions: Decisions
) -> None:
    unlabelled = decisions.namespaces["unlabelled"]
    for default in LEVELS:
        set_profile(cluster, "baseline", defaultNamespacePodSecurityLevel=default)
        want = {level: expected("baseline", level) for level in LEVELS}
        want["unlabelled"] = expected("baseline", default)
        assert decisions.wait_for(want) == want
        allowed, message = decisions.create(unlabelled, pod())
        assert allowed is want["unlabelled"]
        if not allowed:
            assert f"namespace {unlabelled} enforces {default} (it has no {ENFORCE} label" in message


def test_pods_without_the_drivers_volumes_are_not_evaluated(
    cluster: Cluster, operator: OperatorProcess, decisions: Decisions
) -> None:
    set_profile(cluster, "privileged")
    restricted = decisions.namespaces["restricted"]
    decisions.wait_for({"restricted": False, "baseline": False, "privileged": True, "unlabelled": True})
    other_driver = pod()
    other_driver["spec"]["volumes"][0]["csi"]["driver"] = "other.csi.example.com"
    assert decisions.create(restricted, other_driver)[0] is True
    no_volumes = copy.deepcopy(pod())
    no_volumes["spec"]["volumes"] = []
    no_volumes["spec"]["containers"][0]["volumeMounts"] = []
    assert decisions.create(restricted, no_volumes)[0] is True


def test_a_profile_change_takes_effect_without_restarts(
    cluster: Cluster, operator: OperatorProcess, decisions: Decisions
) -> None:
    set_profile(cluster, "restricted")
    everywhere = {kind: True for kind in NAMESPACE_KINDS}
    decisions.wait_for(everywhere)
    assert operator.popen is not None
    pid, log_size = operator.popen.pid, operator.log_size()

    set_profile(cluster, "privileged")
    decisions.wait_for({"restricted": False, "baseline": False, "privileged": True, "unlabelled": True})
    set_profile(cluster, "restricted")
    decisions.wait_for(everywhere)

    assert operator.popen.pid == pid and operator.popen.poll() is None
    assert "===== start" not in operator.log()[log_size:]  # the operator was not restarted


def test_the_policy_is_repaired_and_removed_with_the_cr(
    cluster: Cluster, operator: OperatorProcess, decisions: Decisions
) -> None:
    set_profile(cluster, "privileged")
    decisions.wait_for({"restricted": False, "baseline": False, "privileged": True, "unlabelled": True})

    must(cluster.kubectl("delete", "validatingadmissionpolicybinding", POLICY))
    wait_until("the binding to be recreated", lambda: binding(cluster), timeout=3 * RESYNC_SECONDS + 10)
    must(
        cluster.kubectl(
            "patch", "validatingadmissionpolicy", POLICY, "--type=json", "-p",
            json.dumps([{"op": "replace", "path": "/spec/validations", "value": [{"expression": "true"}]}]),
        )
    )  # fmt: skip
    decisions.wait_for({"restricted": False, "baseline": False, "privileged": True, "unlabelled": True})

    # Forced: pods of other test runs sharing the cluster may use the driver, which would hold removal.
    must(cluster.kubectl("annotate", CR_RESOURCE, CR_NAME, f"{FORCE_REMOVAL}=true", "--overwrite"))
    ensure_no_cr(cluster)
    assert policy(cluster) is None and binding(cluster) is None
    decisions.wait_for({kind: True for kind in NAMESPACE_KINDS})
