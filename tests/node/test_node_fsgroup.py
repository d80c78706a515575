"""fsGroup on the real node: kubelet 1.34 sees VOLUME_MOUNT_GROUP and passes the pod's fsGroup.

A non-root pod (runAsUser 1000, runAsNonRoot, fsGroup 2000) reads a secret the reference provider
returns with mode 0440, before and after rotation; the same pod without fsGroup gets EACCES.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from nodekit import KubectlError, app_pod_spec, wait_for, wait_pod_ready
from nodesetup import ROTATION_SECONDS, Installation

GROUP = 2000
SPC_NAME = "fsgroup-0440"
MOUNT = "/mnt/secrets-store"


@pytest.fixture
def rotation_off(installation: Installation) -> Iterator[None]:
    yield
    installation.provider_control("/rotation?rotated=false")


def spc_0440() -> dict[str, Any]:
    objects = "array:\n  - |\n    objectName: foo\n    objectVersion: v1\n    objectMode: '0440'\n"
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": SPC_NAME},
        "spec": {"provider": "e2e-provider", "parameters": {"objects": objects}},
    }


def non_root_pod(name: str, fs_group: int | None) -> dict[str, Any]:
    spec = app_pod_spec([("secrets", SPC_NAME, MOUNT)])
    security: dict[str, Any] = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
    if fs_group is not None:
        security["fsGroup"] = fs_group
    spec["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_non_root_pod_with_fsgroup_reads_0440_secret_before_and_after_rotation(
    installation: Installation, ns: str, rotation_off: None
) -> None:
    kube = installation.kube
    kube.apply(spc_0440(), ns)
    kube.apply(non_root_pod("fsgroup-reader", GROUP), ns)
    kube.apply(non_root_pod("no-fsgroup-reader", None), ns)
    wait_pod_ready(kube, "fsgroup-reader", ns)
    wait_pod_ready(kube, "no-fsgroup-reader", ns)

    assert kube.exec("fsgroup-reader", ns, "id", "-u").strip() == "1000"
    assert kube.exec("fsgroup-reader", ns, "cat", f"{MOUNT}/foo") == "secret"
    assert kube.exec("fsgroup-reader", ns, "stat", "-L", "-c", "%u %g %a", f"{MOUNT}/foo").split() == [
        "0",
        str(GROUP),
        "440",
    ]
    with pytest.raises(KubectlError, match="Permission denied"):
        kube.exec("no-fsgroup-reader", ns, "cat", f"{MOUNT}/foo")
    assert kube.exec("no-fsgroup-reader", ns, "stat", "-L", "-c", "%u %g %a", f"{MOUNT}/foo").split() == [
        "0",
        "0",
        "440",
    ]

    installation.provider_control("/rotation?rotated=true")
    wait_for(
        "the mounted file to rotate in the fsGroup pod",
        lambda: kube.exec("fsgroup-reader", ns, "cat", f"{MOUNT}/foo") == "rotated",
        90 + 4 * ROTATION_SECONDS,
        interval=2,
    )
    stat_after = kube.exec("fsgroup-reader", ns, "stat", "-L", "-c", "%u %g %a", f"{MOUNT}/foo").split()
    assert stat_after == ["0", str(GROUP), "440"]
    # the pod without fsGroup rotates too, and still cannot read
    wait_for(
        "the pod without fsGroup to get the rotated generation",
        lambda: _rotated_generation_visible(kube, ns),
        90 + 4 * ROTATION_SECONDS,
        interval=2,
    )
    with pytest.raises(KubectlError, match="Permission denied"):
        kube.exec("no-fsgroup-reader", ns, "cat", f"{MOUNT}/foo")


def _rotated_generation_visible(kube: Any, ns: str) -> bool:
    spcps = kube.get("secretproviderclasspodstatuses", "", ns)["items"]
    mine = [s for s in spcps if s["status"].get("podName") == "no-fsgroup-reader"]
    return bool(mine) and all(o.get("version") == "v2" for o in mine[0]["status"].get("objects") or [])
