"""The ClusterCSIDriver status as a pure function of what one reconcile pass saw and did."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .apply import NODE_SERVICE, STATIC_RESOURCES, Failure, ObjectKey
from .consumers import DriverUsers
from .names import CONFIG_HASH_ANNOTATION
from .spec import ManagementState
from .volume_profile import CONDITION as PROFILE_ENFORCED
from .volume_profile import ProfileEnforcement

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
UPGRADEABLE = "Upgradeable"
AS_EXPECTED = "AsExpected"
WAITING_FOR_PODS = "WaitingForPods"
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def to_status(self, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
        value = "True" if self.status else "False"
        unchanged = previous is not None and previous.get("status") == value
        return {
            "type": self.type,
            "status": value,
            "reason": self.reason,
            "message": self.message[:MAX_MESSAGE],
            "lastTransitionTime": previous.get("lastTransitionTime", now) if unchanged and previous else now,
        }


@dataclass(frozen=True)
class Observation:
    """What a reconcile pass knows: the spec's state, what failed, and the live DaemonSet."""

    generation: int
    management_state: ManagementState | None
    spec_error: str | None = None
    failures: Sequence[Failure] = ()
    daemonset: Mapping[str, Any] | None = None
    removal_pending: Sequence[ObjectKey] = field(default_factory=tuple)
    # Removal is requested but held back: these pods still use the driver.
    waiting_for: DriverUsers = field(default_factory=DriverUsers)
    # Who enforces the ephemeral volume profile (a Managed pass only).
    profile_enforcement: ProfileEnforcement | None = None


def build_status(
    observation: Observation,
    *,
    previous: Mapping[str, Any] | None,
    version: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    conditions = _conditions(observation)
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    daemonset = observation.daemonset
    return {
        "observedGeneration": observation.generation,
        "version": version,
        "readyReplicas": int((daemonset or {}).get("status", {}).get("numberReady", 0)),
        "conditions": [condition.to_status(before.get(condition.type), stamp) for condition in conditions],
        "generations": _generations(daemonset),
    }


def _conditions(observation: Observation) -> list[Condition]:
    node_available, node_progressing = _node_service(observation.daemonset)
    node_degraded = _component_degraded(NODE_SERVICE, observation.failures)
    static_degraded = _component_degraded(STATIC_RESOURCES, observation.failures)
    state = observation.management_state
    degraded = _aggregate_degraded(observation, node_degraded, static_degraded)
    upgradeable = Condition(UPGRADEABLE, True, AS_EXPECTED, "")
    if observation.spec_error is not None:
        progressing = Condition(PROGRESSING, False, "InvalidSpec", "waiting for a valid spec")
        available = _rename(node_available, AVAILABLE)
    elif state is ManagementState.UNMANAGED:
        message = "managementState is Unmanaged: the operator leaves the driver as it is"
        progressing = Condition(PROGRESSING, False, "Unmanaged", message)
        node_progressing = Condition(node_progressing.type, False, "Unmanaged", message)
        available = _rename(node_available, AVAILABLE)
        upgradeable = Condition(UPGRADEABLE, False, "Unmanaged", message)
    elif state is ManagementState.REMOVED and observation.waiting_for:
        # Nothing is removed yet: the driver still serves, and says what it waits for.
        available = _rename(node_available, AVAILABLE)
        message = observation.waiting_for.waiting_message()
        progressing = Condition(PROGRESSING, True, WAITING_FOR_PODS, message)
    elif state is ManagementState.REMOVED:
        message = "managementState is Removed: the driver is removed"
        available = Condition(AVAILABLE, False, "Removed", message)
        node_available = Condition(node_available.type, False, "Removed", message)
        node_progressing = Condition(node_progressing.type, False, "Removed", message)
        pending = observation.removal_pending
        progressing = (
            Condition(PROGRESSING, True, "Removing", "waiting for " + ", ".join(map(str, pending)))
            if pending
            else Condition(PROGRESSING, False, "Removed", "every object of the driver is deleted")
        )
    else:
        available = _rename(node_available, AVAILABLE)
        progressing = _rename(node_progressing, PROGRESSING)
    conditions = [
        available,
        progressing,
        degraded,
        upgradeable,
        node_available,
        node_progressing,
        node_degraded,
        static_degraded,
    ]
    enforcement = observation.profile_enforcement
    if enforcement is not None:
        conditions.append(
            Condition(PROFILE_ENFORCED, enforcement.enforced, enforcement.reason, enforcement.message)
        )
    return conditions


def _node_service(daemonset: Mapping[str, Any] | None) -> tuple[Condition, Condition]:
    available_type, progressing_type = f"{NODE_SERVICE}Available", f"{NODE_SERVICE}Progressing"
    if daemonset is None:
        message = "the node plugin DaemonSet does not exist"
        return (
            Condition(available_type, False, "NotDeployed", message),
            Condition(progressing_type, True, "Deploying", message),
        )
    name = f"{daemonset['metadata'].get('namespace')}/{daemonset['metadata'].get('name')}"
    generation = int(daemonset["metadata"].get("generation", 0))
    status = daemonset.get("status") or {}
    observed = int(status.get("observedGeneration", 0))
    desired = int(status.get("desiredNumberScheduled", 0))
    updated = int(status.get("updatedNumberScheduled", 0))
    available = int(status.get("numberAvailable", 0))
    summary = f"DaemonSet {name}: {available}/{desired} pods available, {updated}/{desired} updated"
    if observed < generation:
        progressing = Condition(
            progressing_type, True, "Deploying", f"{summary}; generation {generation} pending"
        )
    elif updated < desired or available < desired:
        progressing = Condition(progressing_type, True, "Deploying", summary)
    else:
        progressing = Condition(progressing_type, False, AS_EXPECTED, summary)
    if available > 0:
        ready = Condition(available_type, True, AS_EXPECTED, summary)
    elif desired == 0 and observed >= generation:
        ready = Condition(
            available_type, False, "NoMatchingNodes", f"{summary}: no node matches its placement"
        )
    else:
        ready = Condition(available_type, False, "Deploying", summary)
    return ready, progressing


def _component_degraded(component: str, failures: Sequence[Failure]) -> Condition:
    mine = [failure for failure in failures if failure.key.component == component]
    if not mine:
        return Condition(f"{component}Degraded", False, AS_EXPECTED, "")
    reason = "ApplyFailed" if any(failure.action == "apply" for failure in mine) else "DeleteFailed"
    return Condition(f"{component}Degraded", True, reason, "; ".join(map(str, mine)))


def _aggregate_degraded(observation: Observation, *components: Condition) -> Condition:
    if observation.spec_error is not None:
        return Condition(DEGRADED, True, "InvalidSpec", observation.spec_error)
    failing = [condition for condition in components if condition.status]
    if not failing:
        return Condition(DEGRADED, False, AS_EXPECTED, "")
    return Condition(DEGRADED, True, failing[0].reason, "; ".join(c.message for c in failing))


def _rename(condition: Condition, new_type: str) -> Condition:
    return Condition(new_type, condition.status, condition.reason, condition.message)


def _generations(daemonset: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if daemonset is None:
        return []
    metadata = daemonset["metadata"]
    annotations = daemonset.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    return [
        {
            "group": "apps",
            "resource": "daemonsets",
            "namespace": metadata.get("namespace", ""),
            "name": metadata["name"],
            "lastGeneration": int(metadata.get("generation", 0)),
            "hash": annotations.get(CONFIG_HASH_ANNOTATION, ""),
        }
    ]
