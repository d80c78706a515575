"""Which pods hold a removal back, and how they are named."""

from __future__ import annotations

from typing import Any

import pytest
from sscsi_operator.consumers import DriverUsers, driver_users, removal_forced, uses_driver
from sscsi_operator.names import FORCE_REMOVAL_ANNOTATION


def pod(volumes: list[dict[str, Any]], phase: str | None = "Running", name: str = "p") -> dict[str, Any]:
    status = {} if phase is None else {"phase": phase}
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": {"volumes": volumes}, "status": status}


INLINE = {"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True}}


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (pod([INLINE]), True),
        (pod([INLINE], phase="Pending"), True),  # not started yet: it would mount once scheduled
        (pod([INLINE], phase=None), True),  # no status yet
        (pod([{"name": "t", "emptyDir": {}}, INLINE]), True),
        (pod([INLINE], phase="Succeeded"), False),
        (pod([INLINE], phase="Failed"), False),
        (pod([{"name": "other", "csi": {"driver": "ebs.csi.aws.com"}}]), False),
        (pod([{"name": "claim", "persistentVolumeClaim": {"claimName": "data"}}]), False),
        ({"metadata": {"name": "bare"}, "spec": {}}, False),
    ],
)
def test_which_pods_use_the_driver(candidate: dict[str, Any], expected: bool) -> None:
    assert uses_driver(candidate) is expected


def test_users_are_sorted_unique_and_capped_in_messages() -> None:
    pods = [pod([INLINE], name=f"p{i:02d}") for i in reversed(range(12))] + [pod([INLINE], name="p00")]
    users = driver_users(pods)
    assert users.pods == tuple(f"ns/p{i:02d}" for i in range(12))
    assert users.named() == ", ".join(f"ns/p{i:02d}" for i in range(10)) + " and 2 more"
    assert "12 pods using the driver" in users.waiting_message()
    assert FORCE_REMOVAL_ANNOTATION in users.waiting_message()
    assert "12 pods still use the driver" in users.forced_message()
    one = DriverUsers(("ns/only",))
    assert one.named() == "ns/only" and "1 pod using the driver: ns/only." in one.waiting_message()
    assert not DriverUsers() and one


@pytest.mark.parametrize(
    ("annotations", "forced"),
    [
        (None, False),
        ({}, False),
        ({FORCE_REMOVAL_ANNOTATION: "true"}, True),
        ({FORCE_REMOVAL_ANNOTATION: "True"}, True),
        ({FORCE_REMOVAL_ANNOTATION: "false"}, False),
        ({FORCE_REMOVAL_ANNOTATION: "yes"}, False),  # only the documented value
        ({"force-removal": "true"}, False),
    ],
)
def test_removal_is_forced_only_by_the_documented_annotation(
    annotations: dict[str, str] | None, forced: bool
) -> None:
    metadata: dict[str, Any] = {"name": "secrets-store.csi.k8s.io"}
    if annotations is not None:
        metadata["annotations"] = annotations
    assert removal_forced({"metadata": metadata}) is forced
