"""The ephemeral volume profile policy: what is rendered when, and its CEL evaluated on every decision.

The CEL runs here in cel-python, as the apiserver runs a ValidatingAdmissionPolicy: every match
condition must hold for the request to be evaluated at all; the variables are computed in order; the
first failing validation refuses with its messageExpression. The expected decisions are those of
OpenShift's CSIInlineVolumeSecurity admission plugin (tests/e2e/test_volume_profile_policy.py proves
the same table on the real apiserver).
"""

from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import dataclass
from typing import Any

import celpy
import pytest
from celpy import celtypes
from sscsi_kube import Resource as Kind
from sscsi_operator.apply import Failure, ObjectKey, child_kinds
from sscsi_operator.kinds import (
    SECURITY_CONTEXT_CONSTRAINTS,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
)
from sscsi_operator.names import MANAGED_BY_LABEL, OPERATOR_NAME
from sscsi_operator.reconcile import Reconciler, Trigger
from sscsi_operator.render import NAMES, ClusterFacts, Owner, render
from sscsi_operator.settings import Settings
from sscsi_operator.spec import EphemeralVolumeProfile, SpecError, parse_spec
from sscsi_operator.status import Observation, build_status
from sscsi_operator.volume_profile import CONDITION, profile_enforcement

from unit.sscsi_operator.test_reconcile import SETTINGS as RECONCILE_SETTINGS
from unit.sscsi_operator.test_reconcile import FakeKube
from unit.sscsi_operator.test_reconcile import conditions as fake_conditions
from unit.sscsi_operator.test_reconcile import cr as fake_cr

SETTINGS = Settings.from_environment({"OPERAND_NAMESPACE": "sscsi-system", "DRIVER_IMAGE": "example.com/d:1"})
OWNER = Owner(name="secrets-store.csi.k8s.io", uid="0b7e2f52-0000-4000-8000-000000000002")
SERVED = ClusterFacts(admission_policies=True)
LEVELS = ("restricted", "baseline", "privileged")
ENFORCE = "pod-security.kubernetes.io/enforce"
DRIVER = NAMES.csidriver
# Where each resource the policy matches keeps its pod spec.
POD_SPEC_PATHS = {
    "pods": ("spec",),
    "podtemplates": ("template", "spec"),
    "replicationcontrollers": ("spec", "template", "spec"),
    "deployments": ("spec", "template", "spec"),
    "replicasets": ("spec", "template", "spec"),
    "statefulsets": ("spec", "template", "spec"),
    "daemonsets": ("spec", "template", "spec"),
    "jobs": ("spec", "template", "spec"),
    "cronjobs": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def spec(profile: str = "restricted", default: str | None = None) -> Any:
    store: dict[str, Any] = {"ephemeralVolumeProfile": profile}
    if default is not None:
        store["defaultNamespacePodSecurityLevel"] = default
    return parse_spec({"driverConfig": {"secretsStore": store}})


def policy_objects(
    facts: ClusterFacts = SERVED, profile: str = "restricted", default: str | None = None
) -> dict[str, dict[str, Any]]:
    return copy.deepcopy(_policy_objects(facts, profile, default))


@functools.lru_cache
def _policy_objects(facts: ClusterFacts, profile: str, default: str | None) -> dict[str, dict[str, Any]]:
    # Rendering parses every template (pure-Python YAML): once per combination is enough.
    rendered = render(spec(profile, default), SETTINGS, owner=OWNER, facts=facts)
    return {m["kind"]: m for m in rendered if m["kind"].startswith("ValidatingAdmissionPolicy")}


# Compiled CEL by expression text (compiling is most of the cost).
_PROGRAMS: dict[str, Any] = {}


@dataclass(frozen=True)
class Decision:
    evaluated: bool  # the match conditions held
    allowed: bool
    message: str = ""


class Policy:
    """A rendered ValidatingAdmissionPolicy, evaluated the way the apiserver does."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.spec = manifest["spec"]
        self._env = celpy.Environment()

    def _eval(self, expression: str, activation: dict[str, Any]) -> Any:
        program = _PROGRAMS.get(expression)
        if program is None:
            program = _PROGRAMS[expression] = self._env.program(self._env.compile(expression))
        return program.evaluate(activation)

    def admit(self, obj: dict[str, Any], resource: str, namespace: str, labels: dict[str, str]) -> Decision:
        metadata: dict[str, Any] = {"name": namespace}
        if labels:
            metadata["labels"] = labels
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(obj),
            "request": celpy.json_to_cel({"resource": {"resource": resource}, "operation": "CREATE"}),
            "namespaceObject": celpy.json_to_cel({"metadata": metadata}),
        }
        if not all(self._eval(c["expression"], activation) for c in self.spec["matchConditions"]):
            return Decision(evaluated=False, allowed=True)
        variables: dict[celtypes.StringType, Any] = {}
        for variable in self.spec["variables"]:
            activation["variables"] = celtypes.MapType(variables)
            variables[celtypes.StringType(variable["name"])] = self._eval(variable["expression"], activation)
        activation["variables"] = celtypes.MapType(variables)
        for validation in self.spec["validations"]:
            if not self._eval(validation["expression"], activation):
                return Decision(True, False, str(self._eval(validation["messageExpression"], activation)))
        return Decision(True, True)


def pod_spec(driver: str = DRIVER) -> dict[str, Any]:
    return {
        "containers": [{"name": "app", "image": "app:1"}],
        "volumes": [
            {"name": "config", "configMap": {"name": "c"}},
            {"name": "secrets", "csi": {"driver": driver, "volumeAttributes": {"secretProviderClass": "a"}}},
        ],
    }


def wrapped(resource: str, inner: dict[str, Any]) -> dict[str, Any]:
    """An object of `resource` with `inner` as its pod spec."""
    obj: dict[str, Any] = inner
    for step in reversed(POD_SPEC_PATHS[resource]):
        obj = {step: obj}
    return {"metadata": {"name": "x"}, **obj}


def namespace_labels(level: str | None) -> dict[str, str]:
    return {} if level is None else {ENFORCE: level}


def openshift_allows(profile: str, namespace_level: str) -> bool:
    """OpenShift's table: the namespace's enforced level must be at least as permissive as the profile."""
    return LEVELS.index(namespace_level) >= LEVELS.index(profile)


# --- rendering -------------------------------------------------------------------------------------


def test_rendered_only_where_the_apiserver_serves_policies_and_is_not_openshift() -> None:
    assert set(policy_objects()) == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert policy_objects(ClusterFacts()) == {}
    assert policy_objects(ClusterFacts(admission_policies=True, openshift=True)) == {}


def test_policy_and_binding_shape() -> None:
    objects = policy_objects(profile="baseline")
    policy, binding = objects["ValidatingAdmissionPolicy"], objects["ValidatingAdmissionPolicyBinding"]
    for obj in (policy, binding):
        assert obj["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert obj["metadata"]["name"] == NAMES.volume_profile_policy
        assert "namespace" not in obj["metadata"]
        assert obj["metadata"]["labels"][MANAGED_BY_LABEL] == OPERATOR_NAME
        assert obj["metadata"]["ownerReferences"] == [OWNER.reference()]
    assert binding["spec"] == {"policyName": NAMES.volume_profile_policy, "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert {op for rule in rules for op in rule["operations"]} == {"CREATE"}  # as OpenShift: create only
    assert {r for rule in rules for r in rule["resources"]} == set(POD_SPEC_PATHS)
    assert all(rule["apiVersions"] == ["v1"] for rule in rules)


def test_the_policy_comes_after_the_csidriver_in_apply_order() -> None:
    kinds = [m["kind"] for m in render(spec(), SETTINGS, facts=SERVED)]
    assert kinds.index("CSIDriver") < kinds.index("ValidatingAdmissionPolicy")
    assert kinds.index("ValidatingAdmissionPolicy") < kinds.index("ValidatingAdmissionPolicyBinding")


def test_child_kinds_include_the_policies_only_while_served() -> None:
    both = {VALIDATING_ADMISSION_POLICY, VALIDATING_ADMISSION_POLICY_BINDING}
    assert both <= set(child_kinds(False, False, True))
    assert not both & set(child_kinds(True, True, False))


# --- decisions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "namespace_level", "default"),
    list(itertools.product(LEVELS, (*LEVELS, None), LEVELS)),
)
def test_decisions_table(profile: str, namespace_level: str | None, default: str) -> None:
    policy = Policy(policy_objects(profile=profile, default=default)["ValidatingAdmissionPolicy"])
    decision = policy.admit(wrapped("pods", pod_spec()), "pods", "team-a", namespace_labels(namespace_level))
    effective = default if namespace_level is None else namespace_level
    assert decision.evaluated
    assert decision.allowed is openshift_allows(profile, effective)
    if not decision.allowed:
        assert decision.message == (
            f"inline volumes of CSIDriver {DRIVER} need a namespace that enforces pod security level "
            f"{profile} or a less restrictive one (the ephemeral volume profile of the driver), but "
            f"namespace team-a enforces {effective}"
            + ("" if namespace_level else f" (it has no {ENFORCE} label: the cluster default)")
            + f". Label the namespace {ENFORCE}={profile} (or privileged), or have a cluster admin change "
            f"spec.driverConfig.secretsStore.ephemeralVolumeProfile of ClusterCSIDriver {DRIVER}"
        )


def test_the_default_for_unlabelled_namespaces_is_privileged() -> None:
    assert parse_spec({}).driver.default_namespace_level is EphemeralVolumeProfile.PRIVILEGED
    policy = Policy(policy_objects(profile="privileged")["ValidatingAdmissionPolicy"])
    assert policy.admit(wrapped("pods", pod_spec()), "pods", "plain", {}).allowed


@pytest.mark.parametrize("resource", sorted(POD_SPEC_PATHS))
def test_every_pod_template_is_decided_like_a_pod(resource: str) -> None:
    policy = Policy(policy_objects(profile="privileged")["ValidatingAdmissionPolicy"])
    restricted = namespace_labels("restricted")
    refused = policy.admit(wrapped(resource, pod_spec()), resource, "ns", restricted)
    assert (refused.evaluated, refused.allowed) == (True, False)
    assert policy.admit(wrapped(resource, pod_spec()), resource, "ns", namespace_labels("privileged")).allowed
    other = policy.admit(wrapped(resource, pod_spec("other.csi.example.com")), resource, "ns", restricted)
    assert other == Decision(evaluated=False, allowed=True)


@pytest.mark.parametrize(
    ("resource", "obj"),
    [
        ("pods", {"metadata": {"name": "p"}, "spec": {"containers": []}}),
        ("pods", {"metadata": {"name": "p"}, "spec": {"volumes": [{"name": "e", "emptyDir": {}}]}}),
        ("replicationcontrollers", {"metadata": {"name": "rc"}, "spec": {"replicas": 1}}),
        ("deployments", {"metadata": {"name": "d"}, "spec": {"template": {"metadata": {}}}}),
        ("podtemplates", {"metadata": {"name": "t"}}),
    ],
    ids=["no-volumes", "other-volumes", "rc-without-template", "template-without-spec", "no-template"],
)
def test_objects_without_the_drivers_volumes_are_not_evaluated(resource: str, obj: dict[str, Any]) -> None:
    policy = Policy(policy_objects(profile="privileged")["ValidatingAdmissionPolicy"])
    assert policy.admit(obj, resource, "ns", namespace_labels("restricted")) == Decision(False, True)


@pytest.mark.parametrize(
    ("label", "value"),
    [
        (ENFORCE, "Restricted"),
        ("pod-security.kubernetes.io/warn", "strict"),
        ("pod-security.kubernetes.io/audit", ""),
        ("pod-security.kubernetes.io/enforce-version", "v1.030"),
        ("pod-security.kubernetes.io/warn-version", "1.30"),
    ],
)
def test_an_invalid_pod_security_label_refuses_as_openshift_does(label: str, value: str) -> None:
    """OpenShift refuses while a namespace has a pod-security label PodSecurity cannot parse, even for
    a restricted-profile driver."""
    policy = Policy(policy_objects(profile="restricted")["ValidatingAdmissionPolicy"])
    decision = policy.admit(wrapped("pods", pod_spec()), "pods", "odd", {label: value})
    assert not decision.allowed
    assert decision.message.startswith(f"namespace odd has an invalid pod security label {label}={value}:")


@pytest.mark.parametrize("version", ["latest", "v1.0", "v1.9", "v1.34"])
def test_valid_version_labels_are_accepted(version: str) -> None:
    policy = Policy(policy_objects(profile="baseline")["ValidatingAdmissionPolicy"])
    labels = {ENFORCE: "baseline", "pod-security.kubernetes.io/enforce-version": version}
    assert policy.admit(wrapped("pods", pod_spec()), "pods", "ns", labels).allowed


# --- spec and status -------------------------------------------------------------------------------


def test_spec_field_for_the_default_namespace_level() -> None:
    assert spec(default="baseline").driver.default_namespace_level is EphemeralVolumeProfile.BASELINE
    with pytest.raises(SpecError, match="defaultNamespacePodSecurityLevel"):
        spec(default="open")


def test_who_enforces_the_profile() -> None:
    by_policy = profile_enforcement(spec("baseline"), SERVED)
    assert (by_policy.enforced, by_policy.reason) == (True, "ValidatingAdmissionPolicy")
    assert "profile baseline" in by_policy.message and "count as privileged" in by_policy.message
    openshift = profile_enforcement(spec(), ClusterFacts(admission_policies=True, openshift=True))
    assert (openshift.enforced, openshift.reason) == (True, "OpenShiftAdmissionPlugin")
    old = profile_enforcement(spec(), ClusterFacts())
    assert (old.enforced, old.reason) == (False, "AdmissionPoliciesNotServed")
    key = ObjectKey("ValidatingAdmissionPolicyBinding", "", NAMES.volume_profile_policy)
    failed = profile_enforcement(spec(), SERVED, [Failure(key, "apply", "forbidden")])
    assert (failed.enforced, failed.reason) == (False, "ApplyFailed")
    assert "forbidden" in failed.message


def test_the_condition_is_reported_when_known() -> None:
    import datetime

    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    enforcement = profile_enforcement(spec("privileged"), SERVED)
    with_it = build_status(
        Observation(generation=1, management_state=None, profile_enforcement=enforcement),
        previous=None,
        version="0",
        now=now,
    )
    [condition] = [c for c in with_it["conditions"] if c["type"] == CONDITION]
    assert (condition["status"], condition["reason"]) == ("True", "ValidatingAdmissionPolicy")
    without = build_status(
        Observation(generation=1, management_state=None), previous=None, version="0", now=now
    )
    assert CONDITION not in {c["type"] for c in without["conditions"]}


# --- reconcile -------------------------------------------------------------------------------------


class ServingKube(FakeKube):
    """The in-memory apiserver of test_reconcile, serving the given API kinds."""

    def __init__(self, *served: Kind) -> None:
        super().__init__()
        self.served = set(served)

    async def serves(self, kind: Kind) -> bool:
        return kind in self.served


POLICY_KEY = ObjectKey("ValidatingAdmissionPolicy", "", NAMES.volume_profile_policy)
BINDING_KEY = ObjectKey("ValidatingAdmissionPolicyBinding", "", NAMES.volume_profile_policy)


def rendered_profile(kube: FakeKube) -> str:
    variables = {v["name"]: v["expression"] for v in kube.objects[POLICY_KEY]["spec"]["variables"]}
    return str(variables["profile"]).strip("'")


def profile_cr(generation: int, profile: str, **extra: Any) -> dict[str, Any]:
    return fake_cr(generation, driverConfig={"secretsStore": {"ephemeralVolumeProfile": profile}}, **extra)


async def test_a_pass_applies_the_policy_follows_the_profile_and_removal_deletes_it() -> None:
    kube = ServingKube(VALIDATING_ADMISSION_POLICY)
    reconciler = Reconciler(kube, RECONCILE_SETTINGS)  # type: ignore[arg-type]
    assert (await reconciler.reconcile(profile_cr(1, "restricted"), trigger=Trigger.SPEC)).ok
    assert {POLICY_KEY, BINDING_KEY} <= set(kube.objects) and rendered_profile(kube) == "restricted"
    assert fake_conditions(kube)[CONDITION] == ("True", "ValidatingAdmissionPolicy")

    assert (await reconciler.reconcile(profile_cr(2, "privileged"), trigger=Trigger.SPEC)).ok
    assert rendered_profile(kube) == "privileged"
    [message] = [c["message"] for c in kube.statuses[-1]["conditions"] if c["type"] == CONDITION]
    assert "profile privileged" in message

    del kube.objects[BINDING_KEY]  # drift
    await reconciler.reconcile(profile_cr(2, "privileged"), trigger=Trigger.RESYNC)
    assert BINDING_KEY in kube.objects

    await reconciler.reconcile(profile_cr(3, "privileged", managementState="Removed"), trigger=Trigger.SPEC)
    assert POLICY_KEY not in kube.objects and BINDING_KEY not in kube.objects
    assert CONDITION not in fake_conditions(kube)


async def test_on_openshift_no_policy_is_rendered_and_an_old_one_is_pruned() -> None:
    kube = ServingKube(VALIDATING_ADMISSION_POLICY)
    reconciler = Reconciler(kube, RECONCILE_SETTINGS)  # type: ignore[arg-type]
    await reconciler.reconcile(profile_cr(1, "baseline"), trigger=Trigger.SPEC)
    assert POLICY_KEY in kube.objects
    kube.served.add(SECURITY_CONTEXT_CONSTRAINTS)  # e.g. the same objects restored on OpenShift
    assert (await reconciler.reconcile(profile_cr(2, "baseline"), trigger=Trigger.SPEC)).ok
    assert POLICY_KEY not in kube.objects and BINDING_KEY not in kube.objects
    assert fake_conditions(kube)[CONDITION] == ("True", "OpenShiftAdmissionPlugin")


async def test_without_admission_policies_the_profile_is_reported_unenforced() -> None:
    kube = ServingKube()
    reconciler = Reconciler(kube, RECONCILE_SETTINGS)  # type: ignore[arg-type]
    assert (await reconciler.reconcile(profile_cr(1, "baseline"), trigger=Trigger.SPEC)).ok
    assert POLICY_KEY not in kube.objects
    assert fake_conditions(kube)[CONDITION] == ("False", "AdmissionPoliciesNotServed")
