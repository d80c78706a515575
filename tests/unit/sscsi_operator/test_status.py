"""Status conditions: what the ClusterCSIDriver reports for each situation a pass can see."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from sscsi_operator.apply import Failure, ObjectKey
from sscsi_operator.consumers import DriverUsers
from sscsi_operator.names import CONFIG_HASH_ANNOTATION
from sscsi_operator.spec import ManagementState
from sscsi_operator.status import Observation, build_status

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=1)
MANAGED = ManagementState.MANAGED


def daemonset(generation: int = 1, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "node", "namespace": "ns", "generation": generation},
        "spec": {"template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: "abc"}}}},
        "status": status,
    }


def conditions(observation: Observation, previous: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    status = build_status(observation, previous=previous, version="1.2.3", now=NOW)
    return {c["type"]: c for c in status["conditions"]}


def summary(observation: Observation) -> dict[str, tuple[str, str]]:
    return {t: (c["status"], c["reason"]) for t, c in conditions(observation).items()}


ROLLED_OUT = daemonset(
    observedGeneration=1, desiredNumberScheduled=2, updatedNumberScheduled=2, numberAvailable=2, numberReady=2
)


def test_rolled_out_is_available_and_not_progressing() -> None:
    observation = Observation(generation=3, management_state=MANAGED, daemonset=ROLLED_OUT)
    status = build_status(observation, previous=None, version="1.2.3", now=NOW)
    assert status["observedGeneration"] == 3
    assert status["version"] == "1.2.3"
    assert status["readyReplicas"] == 2
    assert status["generations"] == [
        {
            "group": "apps",
            "resource": "daemonsets",
            "namespace": "ns",
            "name": "node",
            "lastGeneration": 1,
            "hash": "abc",
        }
    ]
    assert summary(observation) == {
        "Available": ("True", "AsExpected"),
        "Progressing": ("False", "AsExpected"),
        "Degraded": ("False", "AsExpected"),
        "Upgradeable": ("True", "AsExpected"),
        "NodeServiceAvailable": ("True", "AsExpected"),
        "NodeServiceProgressing": ("False", "AsExpected"),
        "NodeServiceDegraded": ("False", "AsExpected"),
        "StaticResourcesDegraded": ("False", "AsExpected"),
    }
    assert conditions(observation)["Available"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("ds", "available", "progressing"),
    [
        (None, ("False", "NotDeployed"), ("True", "Deploying")),
        (daemonset(generation=2, observedGeneration=1), ("False", "Deploying"), ("True", "Deploying")),
        (
            daemonset(
                observedGeneration=1, desiredNumberScheduled=2, updatedNumberScheduled=1, numberAvailable=1
            ),
            ("True", "AsExpected"),
            ("True", "Deploying"),
        ),
        (
            daemonset(
                observedGeneration=1, desiredNumberScheduled=2, updatedNumberScheduled=2, numberAvailable=0
            ),
            ("False", "Deploying"),
            ("True", "Deploying"),
        ),
        (
            daemonset(observedGeneration=1, desiredNumberScheduled=0),
            ("False", "NoMatchingNodes"),
            ("False", "AsExpected"),
        ),
    ],
)
def test_rollout_states(
    ds: dict[str, Any] | None, available: tuple[str, str], progressing: tuple[str, str]
) -> None:
    got = summary(Observation(generation=1, management_state=MANAGED, daemonset=ds))
    assert got["Available"] == got["NodeServiceAvailable"] == available
    assert got["Progressing"] == got["NodeServiceProgressing"] == progressing


def test_apply_failure_is_degraded_with_the_apiservers_message() -> None:
    message = 'admission webhook "deny" denied the request: no DaemonSets today'
    failures = [
        Failure(ObjectKey("DaemonSet", "ns", "node"), "apply", message),
        Failure(ObjectKey("CSIDriver", "", "secrets-store.csi.k8s.io"), "apply", "forbidden"),
    ]
    got = conditions(
        Observation(generation=1, management_state=MANAGED, failures=failures, daemonset=ROLLED_OUT)
    )
    assert (got["Degraded"]["status"], got["Degraded"]["reason"]) == ("True", "ApplyFailed")
    assert message in got["Degraded"]["message"] and "forbidden" in got["Degraded"]["message"]
    assert got["NodeServiceDegraded"]["status"] == "True"
    assert got["NodeServiceDegraded"]["message"] == f"apply DaemonSet ns/node: {message}"
    assert got["StaticResourcesDegraded"]["message"] == "apply CSIDriver secrets-store.csi.k8s.io: forbidden"
    assert got["Available"]["status"] == "True"  # the running pods still serve


def test_delete_failure_is_degraded() -> None:
    failures = [Failure(ObjectKey("ClusterRole", "", "secretprovidersyncing-role"), "delete", "forbidden")]
    got = summary(
        Observation(generation=1, management_state=MANAGED, failures=failures, daemonset=ROLLED_OUT)
    )
    assert got["Degraded"] == got["StaticResourcesDegraded"] == ("True", "DeleteFailed")


def test_invalid_spec() -> None:
    observation = Observation(
        generation=4, management_state=None, spec_error="spec.logLevel: 'Loud' is not one of ..."
    )
    got = conditions(observation)
    assert (got["Degraded"]["status"], got["Degraded"]["reason"]) == ("True", "InvalidSpec")
    assert "spec.logLevel" in got["Degraded"]["message"]
    assert (got["Progressing"]["status"], got["Progressing"]["reason"]) == ("False", "InvalidSpec")


def test_unmanaged() -> None:
    got = summary(Observation(generation=1, management_state=ManagementState.UNMANAGED, daemonset=ROLLED_OUT))
    assert got["Available"] == ("True", "AsExpected")
    assert got["Progressing"] == got["NodeServiceProgressing"] == ("False", "Unmanaged")
    assert got["Upgradeable"] == ("False", "Unmanaged")
    assert got["Degraded"] == ("False", "AsExpected")


def test_removed_while_and_after_removing() -> None:
    pending = [ObjectKey("DaemonSet", "ns", "node")]
    removing = conditions(
        Observation(generation=1, management_state=ManagementState.REMOVED, removal_pending=pending)
    )
    assert (removing["Progressing"]["status"], removing["Progressing"]["reason"]) == ("True", "Removing")
    assert "DaemonSet ns/node" in removing["Progressing"]["message"]
    done = summary(Observation(generation=1, management_state=ManagementState.REMOVED))
    assert done["Available"] == done["NodeServiceAvailable"] == ("False", "Removed")
    assert done["Progressing"] == ("False", "Removed")
    assert done["NodeServiceProgressing"] == ("False", "Removed")


def test_removed_but_waiting_for_pods_still_serves_and_says_why() -> None:
    users = DriverUsers(("app/reader", "app/writer"))
    got = conditions(
        Observation(
            generation=2, management_state=ManagementState.REMOVED, daemonset=ROLLED_OUT, waiting_for=users
        )
    )
    assert (got["Progressing"]["status"], got["Progressing"]["reason"]) == ("True", "WaitingForPods")
    assert "2 pods using the driver: app/reader, app/writer" in got["Progressing"]["message"]
    assert got["Available"]["status"] == got["NodeServiceAvailable"]["status"] == "True"
    assert (got["Degraded"]["status"], got["Upgradeable"]["status"]) == ("False", "True")


def test_transition_time_changes_only_with_the_status() -> None:
    rolling = daemonset(observedGeneration=1, desiredNumberScheduled=1, updatedNumberScheduled=1)
    first = build_status(Observation(1, MANAGED, daemonset=rolling), previous=None, version="v", now=NOW)
    second = build_status(
        Observation(1, MANAGED, daemonset=ROLLED_OUT), previous=first, version="v", now=LATER
    )
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["Available"] == "2026-01-02T03:05:05Z"  # False -> True
    assert times["Degraded"] == "2026-01-02T03:04:05Z"  # stayed False
    third = build_status(
        Observation(1, MANAGED, daemonset=ROLLED_OUT), previous=second, version="v", now=LATER
    )
    assert third == second


def test_long_messages_are_capped() -> None:
    failures = [Failure(ObjectKey("DaemonSet", "ns", "node"), "apply", "x" * 10_000)]
    got = conditions(Observation(generation=1, management_state=MANAGED, failures=failures))
    assert len(got["Degraded"]["message"]) <= 2000
