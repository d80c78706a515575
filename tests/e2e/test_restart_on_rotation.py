"""Restart on rotation on the real control plane: real Deployments (the controller-manager makes their
ReplicaSets and pods), real SPCPS written by the driver for volumes the kubelet emulator publishes,
and the operator's restart controller watching them.

Pods never run (no kubelet), but a rollout restart is what the Deployment records: the pod template's
`kubectl.kubernetes.io/restartedAt`, a new ReplicaSet, and our Event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import wait_for
from sscsi_kube import Resource
from sscsi_kube.resources import EVENT, POD, SPC, SPCPS
from sscsi_operator.kinds import connect
from sscsi_operator.restart import RestartConfig, RestartController
from sscsi_operator.restart_policy import EVENT_REASON, RESTART_ANNOTATION, RESTARTED_AT_ANNOTATION

INTERVAL = 2.0
MIN_INTERVAL = 10.0
DEPLOYMENT = Resource("apps", "v1", "deployments", "Deployment")
REPLICA_SET = Resource("apps", "v1", "replicasets", "ReplicaSet")


@pytest.fixture(scope="module")
async def xenv(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-restart",
        node="sscsi-node-restart",
        rotation=True,
        rotation_interval=f"{INTERVAL}s",
    ) as e:
        yield e
        e.provider_control("/rotation?rotated=false")


@pytest.fixture
async def controller(cluster: Any, crds: None) -> AsyncIterator[RestartController]:
    """The operator's restart controller, as its kopf daemon runs it, with the admin's credentials."""
    client = connect(str(cluster.kubeconfig))
    assert await client.serves(SPCPS), "the controller watches SecretProviderClassPodStatuses"
    config = RestartConfig(enabled=True, window_seconds=INTERVAL, minimum_interval_seconds=MIN_INTERVAL)
    ctl = RestartController(client, lambda: config)
    task = asyncio.create_task(ctl.run())
    try:
        yield ctl
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def deployment(env: DriverEnv, namespace: str, name: str, replicas: int, opted_in: bool) -> dict[str, Any]:
    pod = pod_manifest(name, namespace, env.node, [csi_volume("secrets", "restart-spc")])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {RESTART_ANNOTATION: "true"} if opted_in else {},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod["spec"]},
        },
    }


async def pods_of(env: DriverEnv, namespace: str, app: str) -> list[dict[str, Any]]:
    doc = await env.api.list(POD, namespace, labels={"app": app})
    return [p for p in doc.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


async def replica_sets(env: DriverEnv, namespace: str, app: str) -> list[dict[str, Any]]:
    doc = await env.api.list(REPLICA_SET, namespace, labels={"app": app})
    return list(doc.get("items") or [])


async def restarted_at(env: DriverEnv, namespace: str, name: str) -> str | None:
    obj = await env.api.get(DEPLOYMENT, name, namespace)
    annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
    value = annotations.get(RESTARTED_AT_ANNOTATION)
    return str(value) if value else None


async def restart_events(env: DriverEnv, namespace: str, name: str) -> list[dict[str, Any]]:
    doc = await env.api.list(EVENT, namespace, fields={"involvedObject.name": name})
    return [e for e in doc.get("items") or [] if e.get("reason") == EVENT_REASON]


async def publish_all(env: DriverEnv, pods: list[dict[str, Any]]) -> None:
    for pod in pods:
        results = await env.kubelet.publish_pod(pod)
        assert all(r.ok for r in results), [r.error for r in results]


async def test_rotation_restarts_the_opted_in_deployment_once_and_never_the_other(
    xenv: DriverEnv, namespace: str, controller: RestartController
) -> None:
    objects = objects_param({"objectName": "foo", "objectVersion": "v1"})
    await xenv.api.create(SPC, spc_manifest("restart-spc", namespace, objects), namespace)
    await xenv.api.create(DEPLOYMENT, deployment(xenv, namespace, "opted-in", 2, True), namespace)
    await xenv.api.create(DEPLOYMENT, deployment(xenv, namespace, "left-alone", 1, False), namespace)

    async def pods_exist() -> bool:
        return len(await pods_of(xenv, namespace, "opted-in")) == 2 and bool(
            await pods_of(xenv, namespace, "left-alone")
        )

    await wait_for(pods_exist, timeout=60)
    first_pods = await pods_of(xenv, namespace, "opted-in")
    other_pods = await pods_of(xenv, namespace, "left-alone")
    await publish_all(xenv, first_pods + other_pods)
    await asyncio.sleep(2)  # the controller has seen the statuses as they were created
    assert await restarted_at(xenv, namespace, "opted-in") is None

    xenv.provider_control("/rotation?rotated=true")
    try:
        await asyncio.sleep(INTERVAL + 0.2)
        # kubelet republishes each pod on its own schedule: one now, the other inside the window
        await publish_all(xenv, [first_pods[0], *other_pods])
        await asyncio.sleep(1.0)
        await publish_all(xenv, [first_pods[1]])

        async def restarted() -> str | None:
            return await restarted_at(xenv, namespace, "opted-in")

        stamp = await wait_for(restarted, timeout=30)

        async def two_replica_sets() -> bool:
            return len(await replica_sets(xenv, namespace, "opted-in")) == 2

        await wait_for(two_replica_sets, timeout=30)
        [event] = await restart_events(xenv, namespace, "opted-in")
        assert event["involvedObject"]["kind"] == "Deployment" and event["type"] == "Normal"
        assert "SecretProviderClass restart-spc: secret/foo v1 -> v2" in event["message"]

        # once per change: old pods republishing the same versions, and the restart's new pods
        # mounting the new content, trigger nothing, even after the minimum interval
        await publish_all(xenv, first_pods)
        new_pods = [
            p
            for p in await pods_of(xenv, namespace, "opted-in")
            if p["metadata"]["name"] not in {q["metadata"]["name"] for q in first_pods}
        ]
        assert new_pods, "the restart made no new pod"
        await publish_all(xenv, new_pods)
        await asyncio.sleep(MIN_INTERVAL + 3)
        await publish_all(xenv, new_pods)
        await asyncio.sleep(3)
        assert await restarted_at(xenv, namespace, "opted-in") == stamp
        assert len(await restart_events(xenv, namespace, "opted-in")) == 1

        # the workload without the annotation: never touched
        assert await restarted_at(xenv, namespace, "left-alone") is None
        assert len(await replica_sets(xenv, namespace, "left-alone")) == 1
        assert await restart_events(xenv, namespace, "left-alone") == []
    finally:
        xenv.provider_control("/rotation?rotated=false")
        for pod in await pods_of(xenv, namespace, "opted-in") + await pods_of(xenv, namespace, "left-alone"):
            await xenv.kubelet.unpublish_pod(pod)
