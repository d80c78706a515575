"""fsGroup through VOLUME_MOUNT_GROUP on the real control plane, driven by the kubelet emulator.

The emulator asks NodeGetCapabilities as kubelet does and passes the pod's fsGroup only because
the driver advertises VOLUME_MOUNT_GROUP. Reads are made by a uid-1000 process with or without
the group, so the kernel decides (the container's bind mount is stood in for by opening the
directories above the tmpfs for traversal, which the bind mount makes unnecessary in a pod).
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, events_for, wait_for
from sscsi_kube.resources import SPC
from sscsi_proto import csi_pb2

INTERVAL = 2.0
GROUP = 2000
NON_ROOT = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}


@pytest.fixture(scope="module")
async def fenv(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-fsgroup",
        node="sscsi-node-fsgroup",
        rotation=True,
        rotation_interval=f"{INTERVAL}s",
    ) as e:
        yield e
        e.provider_control("/rotation?rotated=false")


def read_as_pod(target: Path, name: str, groups: list[int]) -> tuple[int, str]:
    """(0, contents) or (errno, "") for uid 1000 with these supplementary groups."""
    for parent in target.parents:
        if parent == Path("/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    done = subprocess.run(
        ["/bin/cat", str(target / name)],
        user=1000,
        group=1000,
        extra_groups=groups,
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        return 0, done.stdout.decode()
    assert b"Permission denied" in done.stderr, done.stderr
    return errno.EACCES, ""


async def make_pod(env: DriverEnv, namespace: str, name: str, fs_group: int | None) -> dict[str, Any]:
    security: dict[str, Any] = dict(NON_ROOT)
    if fs_group is not None:
        security["fsGroup"] = fs_group
    manifest = pod_manifest(name, namespace, env.node, [csi_volume("v", "fsg-spc")], securityContext=security)
    return await create_pod(env.api, manifest)


async def test_fsgroup_pod_reads_0440_secret_before_and_after_rotation(
    fenv: DriverEnv, namespace: str
) -> None:
    objects = objects_param({"objectName": "foo", "objectMode": "0440"})
    await fenv.api.create(SPC, spc_manifest("fsg-spc", namespace, objects), namespace)
    pod = await make_pod(fenv, namespace, "fsg-pod", GROUP)
    [vol] = await fenv.kubelet.publish_pod(pod)
    assert vol.ok, vol.error
    info = os.stat(vol.target / "foo")
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, GROUP, 0o440)
    assert os.stat(vol.target).st_gid == GROUP
    assert os.stat(vol.target / os.readlink(vol.target / "..data")).st_gid == GROUP
    assert read_as_pod(vol.target, "foo", [GROUP]) == (0, "secret")

    fenv.provider_control("/rotation?rotated=true")
    try:
        await asyncio.sleep(INTERVAL + 0.2)
        [again] = await fenv.kubelet.republish_pod(pod)
        assert again.ok, again.error
        assert (vol.target / "foo").read_text() == "rotated"
        info = os.stat(vol.target / "foo")
        assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (GROUP, 0o440)
        assert read_as_pod(vol.target, "foo", [GROUP]) == (0, "rotated")

        async def rotation_event() -> bool:
            reasons = {e["reason"] for e in await events_for(fenv.api, namespace, "fsg-pod")}
            return "MountRotationComplete" in reasons

        await wait_for(rotation_event, timeout=30)  # events are posted in the background
    finally:
        fenv.provider_control("/rotation?rotated=false")
    await fenv.kubelet.unpublish_pod(pod)


async def test_same_pod_without_fsgroup_is_refused_and_owned_as_upstream(
    fenv: DriverEnv, namespace: str
) -> None:
    objects = objects_param({"objectName": "foo", "objectMode": "0440"})
    await fenv.api.create(SPC, spc_manifest("fsg-spc", namespace, objects), namespace)
    pod = await make_pod(fenv, namespace, "nofsg-pod", None)
    [vol] = await fenv.kubelet.publish_pod(pod)
    assert vol.ok, vol.error
    info = os.stat(vol.target / "foo")
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o440)
    assert read_as_pod(vol.target, "foo", [GROUP]) == (errno.EACCES, "")
    await fenv.kubelet.unpublish_pod(pod)


async def test_invalid_volume_mount_group_is_invalid_argument(fenv: DriverEnv, namespace: str) -> None:
    await fenv.api.create(
        SPC, spc_manifest("fsg-spc", namespace, objects_param({"objectName": "foo"})), namespace
    )
    pod = await make_pod(fenv, namespace, "badgrp-pod", GROUP)
    target = fenv.kubelet.target_path(pod["metadata"]["uid"], "v")
    target.parent.mkdir(parents=True, exist_ok=True)
    request = csi_pb2.NodePublishVolumeRequest(
        volume_id="csi-bad",
        target_path=str(target),
        readonly=True,
        volume_capability=csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(volume_mount_group="wheel")
        ),
        volume_context={
            "secretProviderClass": "fsg-spc",
            "csi.storage.k8s.io/pod.name": "badgrp-pod",
            "csi.storage.k8s.io/pod.namespace": namespace,
            "csi.storage.k8s.io/pod.uid": pod["metadata"]["uid"],
        },
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fenv.kubelet.node.NodePublishVolume(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "volume_mount_group 'wheel' is not a valid group ID" in (caught.value.details() or "")
    assert not target.exists() or not os.listdir(target)


async def test_emulator_sends_the_group_only_because_the_driver_advertises_it(fenv: DriverEnv) -> None:
    reply = await fenv.kubelet.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), timeout=10)
    kinds = {cap.rpc.type for cap in reply.capabilities}
    assert csi_pb2.NodeServiceCapability.RPC.VOLUME_MOUNT_GROUP in kinds
