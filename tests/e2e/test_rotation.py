"""Rotation driven by kubelet republish (CSIDriver requiresRepublish), on the real control plane."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, events_for, read_volume, wait_for
from sscsi_driver import mounter
from sscsi_kube.resources import SPC, SPCPS

INTERVAL = 3.0


@pytest.fixture(scope="module")
async def renv(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-rotation",
        node="sscsi-node-rot",
        rotation=True,
        rotation_interval=f"{INTERVAL}s",
    ) as e:
        yield e
        e.provider_control("/rotation?rotated=false")
        e.provider_control("/fault?mode=none")


def mount_calls(env: DriverEnv) -> int:
    return int(json.loads(env.provider_control("/state"))["mount_calls"])


def counter(metrics: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def spcps_objects(env: DriverEnv, namespace: str, pod: str, spc: str) -> list[dict[str, str]]:
    obj = await env.api.get(SPCPS, f"{pod}-{namespace}-{spc}", namespace)
    return list(obj["status"]["objects"])


async def test_rotation_refreshes_file_and_spcps(renv: DriverEnv, namespace: str) -> None:
    objects = objects_param({"objectName": "foo", "objectVersion": "v1"}, {"objectName": "fookey"})
    await renv.api.create(SPC, spc_manifest("rot-spc", namespace, objects), namespace)
    pod = await create_pod(
        renv.api, pod_manifest("rot-pod", namespace, renv.node, [csi_volume("v", "rot-spc")])
    )
    [first] = await renv.kubelet.publish_pod(pod)
    assert first.ok, first.error
    target = first.target
    assert read_volume(target)["foo"] == "secret"
    assert await spcps_objects(renv, namespace, "rot-pod", "rot-spc") == [
        {"id": "secret/foo", "version": "v1"},
        {"id": "secret/fookey", "version": "v1"},
    ]

    # inside the interval a republish returns at once: the provider is not called
    calls = mount_calls(renv)
    [again] = await renv.kubelet.republish_pod(pod)
    assert again.ok and mount_calls(renv) == calls

    renv.provider_control("/rotation?rotated=true")
    before = counter(renv.metrics(), "rotation_reconcile_total", rotated="true")
    await asyncio.sleep(INTERVAL + 0.2)
    [rotated] = await renv.kubelet.republish_pod(pod)
    assert rotated.ok, rotated.error
    assert read_volume(target) == {"foo": "rotated", "fookey": "rotated"}
    assert await spcps_objects(renv, namespace, "rot-pod", "rot-spc") == [
        {"id": "secret/foo", "version": "v2"},
        {"id": "secret/fookey", "version": "v2"},
    ]
    assert counter(renv.metrics(), "rotation_reconcile_total", rotated="true") == before + 1
    assert re.search(r"^rotation_reconcile_duration_sec_count\{", renv.metrics(), re.M)

    async def rotation_event() -> bool:
        events = await events_for(renv.api, namespace, "rot-pod")
        return any(e["reason"] == "MountRotationComplete" and e["type"] == "Normal" for e in events)

    await wait_for(rotation_event, timeout=20)

    # a provider outage during refresh keeps the previous files and the mount, reports a Warning
    renv.provider_control("/fault?mode=unavailable")
    errors_before = counter(renv.metrics(), "rotation_reconcile_error_total")
    generation = (target / "..data").readlink()
    await asyncio.sleep(INTERVAL + 0.2)
    try:
        [failed] = await renv.kubelet.republish_pod(pod)
    finally:
        renv.provider_control("/fault?mode=none")
    assert failed.ok, "a failed refresh answers kubelet with success, as upstream"
    assert read_volume(target) == {"foo": "rotated", "fookey": "rotated"}
    assert (target / "..data").readlink() == generation
    assert mounter.is_mount_point(target)
    assert counter(renv.metrics(), "rotation_reconcile_error_total") == errors_before + 1

    async def failure_event() -> bool:
        events = await events_for(renv.api, namespace, "rot-pod")
        return any(e["reason"] == "MountRotationFailed" and e["type"] == "Warning" for e in events)

    await wait_for(failure_event, timeout=20)
    await renv.kubelet.unpublish_pod(pod)
    renv.provider_control("/rotation?rotated=false")


async def test_spc_edit_is_picked_up_inside_the_interval(renv: DriverEnv, namespace: str) -> None:
    objects = objects_param({"objectName": "foo"})
    await renv.api.create(SPC, spc_manifest("edit-spc", namespace, objects), namespace)
    pod = await create_pod(
        renv.api, pod_manifest("edit-pod", namespace, renv.node, [csi_volume("v", "edit-spc")])
    )
    [first] = await renv.kubelet.publish_pod(pod)
    assert first.ok, first.error
    assert read_volume(first.target) == {"foo": "secret"}

    added = objects_param({"objectName": "foo"}, {"objectName": "bar", "objectContent": "added-later"})
    await renv.api.merge_patch(SPC, "edit-spc", {"spec": {"parameters": {"objects": added}}}, namespace)

    async def picked_up() -> bool:
        [res] = await renv.kubelet.republish_pod(pod)
        assert res.ok, res.error
        return read_volume(first.target) == {"foo": "secret", "bar": "added-later"}

    # well inside the 3 s interval: the SPC's generation changed, so the driver refreshes at once
    await wait_for(picked_up, timeout=2.5, interval=0.2)
    await renv.kubelet.unpublish_pod(pod)
