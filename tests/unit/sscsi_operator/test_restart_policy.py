"""Restart on rotation: the decisions (debounce, once per change, minimum interval) and the controller's
following of a status to its workload, against an in-memory apiserver."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from sscsi_operator.restart import RestartConfig, RestartController
from sscsi_operator.restart_policy import (
    RESTART_ANNOTATION,
    RESTARTED_AT_ANNOTATION,
    ObjectChange,
    PlannedRestart,
    RestartPlanner,
    Workload,
    version_changes,
)
from sscsi_operator.spec import SpecError, parse_spec

APP = Workload("ns", "Deployment", "app")


def change(new: str, old: str | None = "v1", object_id: str = "secret/foo") -> tuple[ObjectChange, ...]:
    return (ObjectChange("spc", object_id, old, new),)


def test_version_changes_lists_changed_and_new_objects_only() -> None:
    old = {"a": "1", "b": "1", "gone": "1"}
    new = {"a": "2", "b": "1", "c": "1"}
    assert version_changes("spc", old, new) == (
        ObjectChange("spc", "a", "1", "2"),
        ObjectChange("spc", "c", None, "1"),
    )


def test_one_rotation_seen_by_many_pods_is_one_restart() -> None:
    planner = RestartPlanner(window_seconds=30, minimum_interval_seconds=300)
    assert planner.observe(APP, "pod-1", change("v2"), now=0)
    assert planner.observe(APP, "pod-2", change("v2"), now=10)
    assert planner.due(29) == []
    [plan] = planner.due(30)
    assert plan.pods == ("pod-1", "pod-2") and plan.changes == change("v2")
    planner.restarted(plan, 30)
    # the other pods catch up with the same versions later: nothing more
    assert not planner.observe(APP, "pod-3", change("v2"), now=100)
    assert planner.due(10_000) == []


def test_window_is_at_least_five_seconds() -> None:
    planner = RestartPlanner(window_seconds=0, minimum_interval_seconds=10)
    planner.observe(APP, "p", change("v2"), now=0)
    assert planner.due(4.9) == [] and len(planner.due(5)) == 1


def test_a_provider_rotating_on_every_call_restarts_at_most_once_per_interval() -> None:
    planner = RestartPlanner(window_seconds=5, minimum_interval_seconds=300)
    restarts: list[float] = []
    version = 1
    for second in range(0, 3600, 5):  # a new version every poll, for an hour
        version += 1
        planner.observe(APP, "pod", change(f"v{version}", f"v{version - 1}"), now=second)
        for plan in planner.due(second):
            planner.restarted(plan, second)
            restarts.append(second)
    assert len(restarts) == 12  # 3600 s / 300 s
    assert all(b - a >= 300 for a, b in itertools.pairwise(restarts))


def test_a_later_change_within_the_interval_waits_for_it_and_keeps_the_first_old_version() -> None:
    planner = RestartPlanner(window_seconds=5, minimum_interval_seconds=60)
    planner.observe(APP, "p", change("v2"), now=0)
    [first] = planner.due(5)
    planner.restarted(first, 5)
    planner.observe(APP, "p", change("v3", "v2"), now=10)
    planner.observe(APP, "p", change("v4", "v3"), now=20)
    assert planner.due(64) == []
    [second] = planner.due(65)
    assert second.changes == change("v4", "v2")


def test_workloads_are_independent_and_dropped_ones_forgotten() -> None:
    other = Workload("ns", "StatefulSet", "db")
    planner = RestartPlanner(window_seconds=5, minimum_interval_seconds=60)
    planner.observe(APP, "a", change("v2"), now=0)
    planner.observe(other, "b", change("v2"), now=1)
    planner.dropped(APP)
    assert [p.workload for p in planner.due(10)] == [other]


def test_event_message_names_spc_objects_and_versions_never_contents() -> None:
    plan = PlannedRestart(
        APP,
        (ObjectChange("spc-a", "secret/foo", "v1", "v2"), ObjectChange("spc-a", "secret/bar", None, "v1")),
        tuple(f"pod-{i}" for i in range(7)),
    )
    text = plan.message()
    assert "SecretProviderClass spc-a: secret/foo v1 -> v2, secret/bar (none) -> v1" in text
    assert "pod-0" in text and "and 2 more" in text


def test_spec_field_parses_with_defaults_and_bounds() -> None:
    assert parse_spec({}).driver.restart_on_rotation is True
    assert parse_spec({}).driver.restart_minimum_interval_seconds == 300
    spec = {
        "driverConfig": {
            "secretsStore": {"restartOnRotation": {"enabled": False, "minimumIntervalSeconds": 60}}
        }
    }
    driver = parse_spec(spec).driver
    assert (driver.restart_on_rotation, driver.restart_minimum_interval_seconds) == (False, 60)
    with pytest.raises(SpecError, match=r"restartOnRotation\.minimumIntervalSeconds"):
        parse_spec({"driverConfig": {"secretsStore": {"restartOnRotation": {"minimumIntervalSeconds": 1}}}})
    with pytest.raises(SpecError, match=r"restartOnRotation\.enabled"):
        parse_spec({"driverConfig": {"secretsStore": {"restartOnRotation": {"enabled": "yes"}}}})


def test_config_is_off_with_rotation_off_removed_or_a_bad_spec() -> None:
    rotation_off = {"driverConfig": {"secretsStore": {"secretRotation": {"type": "None"}}}}
    assert not RestartConfig.of_body({"spec": rotation_off}).enabled
    assert not RestartConfig.of_body({"spec": {"managementState": "Removed"}}).enabled
    assert not RestartConfig.of_body({"spec": {"logLevel": "Loud"}}).enabled
    custom = {"secretRotation": {"type": "Custom", "custom": {"minimumRefreshAge": 30}}}
    config = RestartConfig.of_body({"spec": {"driverConfig": {"secretsStore": custom}}})
    assert (config.enabled, config.window_seconds, config.minimum_interval_seconds) == (True, 30.0, 300.0)


# ---- the controller against an in-memory apiserver ----


def meta(name: str, uid: str, owner: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "7", **extra}
    if owner is not None:
        m["ownerReferences"] = [{"controller": True, **owner}]
    return m


class FakeClient:
    def __init__(self, annotated: bool = True) -> None:
        annotations = {RESTART_ANNOTATION: "true"} if annotated else {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {
            ("Deployment", "app"): {"metadata": meta("app", "d-uid", annotations=annotations)},
            ("ReplicaSet", "app-1"): {
                "metadata": meta(
                    "app-1",
                    "rs-uid",
                    {"kind": "Deployment", "apiVersion": "apps/v1", "name": "app", "uid": "d-uid"},
                )
            },
            ("Pod", "app-1-x"): {
                "metadata": meta(
                    "app-1-x",
                    "p-uid",
                    {"kind": "ReplicaSet", "apiVersion": "apps/v1", "name": "app-1", "uid": "rs-uid"},
                )
            },
            ("Pod", "lonely"): {"metadata": meta("lonely", "l-uid")},
        }
        self.patched: list[tuple[str, str]] = []
        self.events: list[tuple[str, str]] = []

    async def find(self, kind: Any, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        assert namespace == "ns", "the controller looks only in the status's namespace"
        return self.objects.get((kind.kind, name))

    async def merge_patch(
        self, kind: Any, name: str, patch: dict[str, Any], namespace: str
    ) -> dict[str, Any]:
        annotations = patch["spec"]["template"]["metadata"]["annotations"]
        assert RESTARTED_AT_ANNOTATION in annotations and patch["metadata"]["resourceVersion"]
        self.patched.append((kind.kind, name))
        return {}

    async def create(self, kind: Any, event: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        assert kind.kind == "Event" and event["involvedObject"]["kind"] == "Deployment"
        self.events.append((event["reason"], event["message"]))
        return event


def status(pod: str, pod_uid: str, version: str, name: str = "s") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": "1",
            "ownerReferences": [{"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": pod_uid}],
        },
        "status": {
            "podName": pod,
            "secretProviderClassName": "spc",
            "objects": [{"id": "secret/foo", "version": version}],
        },
    }


def run_controller(client: FakeClient, events: list[tuple[str, dict[str, Any]]]) -> list[PlannedRestart]:
    clock = [0.0]
    config = RestartConfig(enabled=True, window_seconds=5, minimum_interval_seconds=60)
    controller = RestartController(client, lambda: config, clock=lambda: clock[0])  # type: ignore[arg-type]

    async def go() -> list[PlannedRestart]:
        for event_type, obj in events:
            await controller.handle(event_type, obj)
        clock[0] = 10.0
        return await controller.flush()

    return asyncio.run(go())


def test_a_status_change_restarts_the_annotated_deployment_owning_the_pod() -> None:
    client = FakeClient()
    made = run_controller(
        client, [("ADDED", status("app-1-x", "p-uid", "v1")), ("MODIFIED", status("app-1-x", "p-uid", "v2"))]
    )
    assert [p.workload for p in made] == [APP]
    assert client.patched == [("Deployment", "app")]
    [(reason, message)] = client.events
    assert reason == "SecretRotationRestart" and "secret/foo v1 -> v2" in message
    assert RESTARTED_AT_ANNOTATION == "kubectl.kubernetes.io/restartedAt"


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([("ADDED", status("app-1-x", "p-uid", "v2"))], id="new-pod"),
        pytest.param([("MODIFIED", status("app-1-x", "p-uid", "v2"))], id="first-sight"),
        pytest.param(
            [("ADDED", status("app-1-x", "p-uid", "v1")), ("MODIFIED", status("app-1-x", "p-uid", "v1"))],
            id="same-versions",
        ),
        pytest.param(
            [("ADDED", status("app-1-x", "other", "v1")), ("MODIFIED", status("app-1-x", "other", "v2"))],
            id="status-not-owned-by-that-pod",
        ),
        pytest.param(
            [("ADDED", status("lonely", "l-uid", "v1")), ("MODIFIED", status("lonely", "l-uid", "v2"))],
            id="pod-without-workload",
        ),
    ],
)
def test_no_restart_without_a_real_change_of_an_owned_pod(events: list[tuple[str, dict[str, Any]]]) -> None:
    client = FakeClient()
    assert run_controller(client, events) == []
    assert client.patched == [] and client.events == []


def test_a_workload_without_the_annotation_is_never_restarted() -> None:
    client = FakeClient(annotated=False)
    made = run_controller(
        client, [("ADDED", status("app-1-x", "p-uid", "v1")), ("MODIFIED", status("app-1-x", "p-uid", "v2"))]
    )
    assert made == [] and client.patched == []


def test_annotation_removed_before_the_window_ends_means_no_restart() -> None:
    client = FakeClient()
    clock = [0.0]
    config = RestartConfig(enabled=True, window_seconds=5, minimum_interval_seconds=60)
    controller = RestartController(client, lambda: config, clock=lambda: clock[0])  # type: ignore[arg-type]

    async def go() -> list[PlannedRestart]:
        await controller.handle("ADDED", status("app-1-x", "p-uid", "v1"))
        await controller.handle("MODIFIED", status("app-1-x", "p-uid", "v2"))
        client.objects[("Deployment", "app")]["metadata"]["annotations"] = {}
        clock[0] = 10.0
        return await controller.flush()

    assert asyncio.run(go()) == [] and client.patched == []
    assert controller.planner.pending() == []
