"""The kinds the operator applies, watches or looks for, and its connection to the apiserver.

Everything that talks to the API is sscsi_kube; this module only names what the operator uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sscsi_kube import KubeClient, Resource
from sscsi_kube.resources import (
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    CSI_DRIVER,
    DAEMON_SET,
    POD,
    PROMETHEUS_RULE,
    SERVICE,
    SERVICE_ACCOUNT,
    SERVICE_MONITOR,
)

from . import names

__all__ = [
    "CHILD_KINDS",
    "CLUSTER_CSI_DRIVER",
    "CLUSTER_ROLE",
    "CLUSTER_ROLE_BINDING",
    "CSI_DRIVER",
    "DAEMON_SET",
    "POD",
    "PROMETHEUS_RULE",
    "SECURITY_CONTEXT_CONSTRAINTS",
    "SERVICE",
    "SERVICE_ACCOUNT",
    "SERVICE_MONITOR",
    "VALIDATING_ADMISSION_POLICY",
    "VALIDATING_ADMISSION_POLICY_BINDING",
    "connect",
    "kind_of",
]

VALIDATING_ADMISSION_POLICY = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicies",
    "ValidatingAdmissionPolicy",
    namespaced=False,
)
VALIDATING_ADMISSION_POLICY_BINDING = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicybindings",
    "ValidatingAdmissionPolicyBinding",
    namespaced=False,
)
# Served only by OpenShift, whose own admission plugin enforces the ephemeral volume profile.
SECURITY_CONTEXT_CONSTRAINTS = Resource(
    "security.openshift.io",
    "v1",
    "securitycontextconstraints",
    "SecurityContextConstraints",
    namespaced=False,
)
CLUSTER_CSI_DRIVER = Resource(names.GROUP, names.VERSION, names.PLURAL, names.KIND, namespaced=False)

# Every kind the operator may create, in apply order (removal runs in reverse).
CHILD_KINDS = (
    SERVICE_ACCOUNT,
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    CSI_DRIVER,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    SERVICE,
    SERVICE_MONITOR,
    PROMETHEUS_RULE,
    DAEMON_SET,
)
_BY_TYPE = {(kind.api_version, kind.kind): kind for kind in (*CHILD_KINDS, CLUSTER_CSI_DRIVER)}


def kind_of(manifest: Mapping[str, Any]) -> Resource:
    return _BY_TYPE[(manifest["apiVersion"], manifest["kind"])]


def connect(kubeconfig: str | None = None) -> KubeClient:
    """The operator's client: `kubeconfig`, else in-cluster or $KUBECONFIG."""
    return KubeClient.from_config(kubeconfig, f"{names.OPERATOR_NAME}/python", timeout=30.0)
