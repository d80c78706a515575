"""Who enforces the driver's ephemeral volume profile on this cluster, for the ClusterCSIDriver's status.

OpenShift's CSIInlineVolumeSecurity admission plugin reads the profile label of the CSIDriver; on any
other cluster the operator renders a ValidatingAdmissionPolicy that decides the same way
(assets/templates/volumeprofile.yaml.j2, docs/volume-profile.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .apply import Failure
from .render import NAMES, ClusterFacts
from .spec import OperatorSpec

CONDITION = "EphemeralVolumeProfileEnforced"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


@dataclass(frozen=True)
class ProfileEnforcement:
    enforced: bool
    reason: str
    message: str


def profile_enforcement(
    spec: OperatorSpec, facts: ClusterFacts, failures: Iterable[Failure] = ()
) -> ProfileEnforcement:
    profile = spec.driver.ephemeral_volume_profile.value
    if facts.openshift:
        return ProfileEnforcement(
            True,
            "OpenShiftAdmissionPlugin",
            f"OpenShift's CSIInlineVolumeSecurity admission plugin enforces profile {profile} "
            f"(label of CSIDriver {NAMES.csidriver}); the operator renders no admission policy",
        )
    if not facts.admission_policies:
        return ProfileEnforcement(
            False,
            "AdmissionPoliciesNotServed",
            "the apiserver serves no admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy "
            f"(Kubernetes 1.30 or later): profile {profile} is not enforced",
        )
    failed = [failure for failure in failures if failure.key.kind in POLICY_KINDS]
    if failed:
        return ProfileEnforcement(False, "ApplyFailed", "; ".join(map(str, failed)))
    default = spec.driver.default_namespace_level.value
    return ProfileEnforcement(
        True,
        "ValidatingAdmissionPolicy",
        f"ValidatingAdmissionPolicy {NAMES.volume_profile_policy} refuses inline volumes of "
        f"{NAMES.csidriver} in namespaces that enforce a pod security level below profile {profile} "
        f"(namespaces without the pod-security.kubernetes.io/enforce label count as {default})",
    )
