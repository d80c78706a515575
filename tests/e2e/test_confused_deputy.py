"""docs/security.md on the real control plane: what a pod author must not achieve through the driver.

- a Secret the driver did not create keeps its data, labels and owners through publish, rotation
  and pod deletion with the controller-manager's garbage collector running;
- two SecretProviderClasses defining one Secret differently: it never changes hands;
- another namespace's SecretProviderClass, Secret, pod statuses and events are never used;
- a provider socket planted by another user is refused.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, events_for, read_volume, wait_for
from sscsi_kube import ApiError, KubeClient, Resource
from sscsi_kube.resources import EVENT, NAMESPACE, POD, SECRET, SPC, SPCPS

CONFIGMAP = Resource("", "v1", "configmaps", "ConfigMap")
MANAGED = "secrets-store.csi.k8s.io/managed"
REFUSED = "SecretSyncRefused"
FOO = objects_param({"objectName": "foo", "objectVersion": "v1"})
ROTATION = 2.0
GC_TIMEOUT = 90.0


@pytest.fixture(scope="module")
async def env(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-deputy",
        node="sscsi-node-deputy",
        rotation=True,
        rotation_interval=f"{ROTATION:g}s",
    ) as e:
        yield e


def decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def gauge(metrics: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("sync_k8s_secret_refused{"):
            name, value = line.rsplit(" ", 1)
            got = ",".join(sorted(name[len("sync_k8s_secret_refused{") : -1].split(",")))
            if got == want:
                return float(value)
    return None


async def driver_events(api: KubeClient, namespace: str, pod: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in await events_for(api, namespace, pod) if e["reason"] == reason]


async def exists(api: KubeClient, res: Resource, namespace: str, name: str) -> bool:
    try:
        await api.get(res, name, namespace)
        return True
    except ApiError as err:
        if err.not_found:
            return False
        raise


async def rotate(env: DriverEnv, *pods: dict[str, Any]) -> None:
    """One rotation pass: the interval elapses and kubelet republishes each pod."""
    await asyncio.sleep(ROTATION + 0.2)
    for pod in pods:
        [res] = await env.kubelet.republish_pod(pod)
        assert res.ok, res.error


async def test_an_unrelated_secret_is_never_taken_over(env: DriverEnv, namespace: str) -> None:
    anchor = await env.api.create(
        CONFIGMAP, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "anchor"}}, namespace
    )
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "anchor",
        "uid": anchor["metadata"]["uid"],
    }
    victim = await env.api.create(
        SECRET,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "victim", "labels": {"team": "payments"}, "ownerReferences": [owner]},
            "type": "Opaque",
            "data": {"keep": base64.b64encode(b"original").decode()},
        },
        namespace,
    )
    secret_objects = [
        {"secretName": "victim", "type": "Opaque", "data": [{"objectName": "foo", "key": "keep"}]},
        {"secretName": "mine", "type": "Opaque", "data": [{"objectName": "foo", "key": "keep"}]},
    ]
    await env.api.create(SPC, spc_manifest("grab", namespace, FOO, secretObjects=secret_objects), namespace)
    pod = await create_pod(env.api, pod_manifest("grabber", namespace, env.node, [csi_volume("v", "grab")]))

    async def untouched() -> None:
        now = await env.api.get(SECRET, "victim", namespace)
        assert now["metadata"]["resourceVersion"] == victim["metadata"]["resourceVersion"]
        assert decoded(now) == {"keep": b"original"}
        assert now["metadata"]["labels"] == {"team": "payments"}
        assert now["metadata"]["ownerReferences"] == [owner]
        assert "annotations" not in now["metadata"]

    [res] = await env.kubelet.publish_pod(pod)
    assert res.ok, res.error
    assert read_volume(res.target) == {"foo": "secret"}  # the pod still mounts
    await untouched()
    assert decoded(await env.api.get(SECRET, "mine", namespace)) == {"keep": b"secret"}

    async def refused() -> list[dict[str, Any]]:
        return await driver_events(env.api, namespace, "grabber", REFUSED)

    [event] = await wait_for(refused, timeout=20)
    assert event["type"] == "Warning"
    assert f"Secret {namespace}/victim was not synced from SecretProviderClass grab" in event["message"]
    assert f"kubectl label secret victim -n {namespace} {MANAGED}=true" in event["message"]
    labels = {"namespace": namespace, "secret": "victim", "secret_provider_class": "grab"}
    assert gauge(env.metrics(), **labels, reason="unmanaged") == 1

    env.provider_control("/rotation?rotated=true")
    try:
        await rotate(env, pod)
        assert read_volume(res.target) == {"foo": "rotated"}
        assert decoded(await env.api.get(SECRET, "mine", namespace)) == {"keep": b"rotated"}
        await untouched()
    finally:
        env.provider_control("/rotation?rotated=false")
    assert len(await refused()) == 1  # one event, not one per refresh

    # the pod goes: its SecretProviderClassPodStatus is garbage-collected, and `mine` with it
    spcps = f"grabber-{namespace}-grab"
    assert await exists(env.api, SPCPS, namespace, spcps)
    await env.kubelet.unpublish_pod(pod)
    await env.api.request("DELETE", POD.path(namespace, "grabber"), params={"gracePeriodSeconds": 0})

    async def collected() -> bool:
        return not await exists(env.api, SECRET, namespace, "mine")

    await wait_for(collected, timeout=GC_TIMEOUT, interval=0.5)
    assert not await exists(env.api, SPCPS, namespace, spcps)
    await untouched()
    assert gauge(env.metrics(), **labels, reason="unmanaged") is None


async def test_conflicting_definitions_never_change_hands(env: DriverEnv, namespace: str) -> None:
    shared_from = {
        "first": ("foo", FOO),
        "second": ("bar", objects_param({"objectName": "bar", "objectContent": "second-value"})),
    }
    pods = {}
    for spc, (object_name, objects) in shared_from.items():
        entry = {"secretName": "shared", "type": "Opaque", "data": [{"objectName": object_name, "key": "v"}]}
        await env.api.create(SPC, spc_manifest(spc, namespace, objects, secretObjects=[entry]), namespace)
        manifest = pod_manifest(f"{spc}-pod", namespace, env.node, [csi_volume("v", spc)])
        pods[spc] = await create_pod(env.api, manifest)

    [res] = await env.kubelet.publish_pod(pods["first"])
    assert res.ok, res.error
    created = await env.api.get(SECRET, "shared", namespace)
    assert decoded(created) == {"v": b"secret"}
    assert created["metadata"]["annotations"]["secrets-store.csi.k8s.io/owner-spc"] == "first"
    [res] = await env.kubelet.publish_pod(pods["second"])
    assert res.ok, res.error
    assert read_volume(res.target) == {"bar": "second-value"}

    async def owned_by_first(value: bytes) -> None:
        secret = await env.api.get(SECRET, "shared", namespace)
        assert decoded(secret) == {"v": value}
        assert secret["metadata"]["annotations"]["secrets-store.csi.k8s.io/owner-spc"] == "first"
        assert secret["metadata"]["ownerReferences"] == created["metadata"]["ownerReferences"]

    await owned_by_first(b"secret")
    env.provider_control("/rotation?rotated=true")
    try:
        for order in (("second", "first"), ("first", "second")):  # rotation passes, both orders
            await rotate(env, *(pods[name] for name in order))
            await owned_by_first(b"rotated")
    finally:
        env.provider_control("/rotation?rotated=false")

    async def conflict() -> list[dict[str, Any]]:
        return await driver_events(env.api, namespace, "second-pod", REFUSED)

    [event] = await wait_for(conflict, timeout=20)
    assert "from SecretProviderClass second" in event["message"]
    assert "SecretProviderClass first owns it with a different definition" in event["message"]
    assert await driver_events(env.api, namespace, "first-pod", REFUSED) == []
    labels = {"namespace": namespace, "secret": "shared", "secret_provider_class": "second"}
    assert gauge(env.metrics(), **labels, reason="conflict") == 1
    for pod in pods.values():
        await env.kubelet.unpublish_pod(pod)


@pytest.fixture
async def other_namespace(env: DriverEnv, namespace: str) -> AsyncIterator[str]:
    name = f"{namespace}-b"
    await env.api.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await env.api.request("DELETE", NAMESPACE.path(None, name))


async def test_another_namespace_is_never_used(env: DriverEnv, namespace: str, other_namespace: str) -> None:
    theirs = {"secretName": "b-secret", "type": "Opaque", "data": [{"objectName": "foo", "key": "k"}]}
    await env.api.create(
        SPC, spc_manifest("theirs", other_namespace, FOO, secretObjects=[theirs]), other_namespace
    )
    b_secret = await env.api.create(
        SECRET,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "b-secret", "labels": {MANAGED: "true"}},
            "data": {"k": base64.b64encode(b"b-value").decode()},
        },
        other_namespace,
    )
    traversal = f"../../{other_namespace}/secrets/b-secret"
    mine = [
        {"secretName": traversal, "type": "Opaque", "data": [{"objectName": "foo", "key": "k"}]},
        {"secretName": "b-secret", "type": "Opaque", "data": [{"objectName": "foo", "key": "k"}]},
    ]
    await env.api.create(SPC, spc_manifest("mine", namespace, FOO, secretObjects=mine), namespace)

    # an SPC of the other namespace, by name and by a path-traversing name: never found
    for spc, message in [
        ("theirs", f"failed to get secretproviderclass {namespace}/theirs"),
        (f"../../{other_namespace}/secretproviderclasses/theirs", "is not a valid object name"),
    ]:
        pod = await create_pod(
            env.api, pod_manifest(f"p-{len(message)}", namespace, env.node, [csi_volume("v", spc)])
        )
        [res] = await env.kubelet.publish_pod(pod)
        assert res.error is not None and message in (res.error.details() or "")

    # secretObjects naming the other namespace's Secret: synced into the pod's namespace only
    pod = await create_pod(env.api, pod_manifest("syncer", namespace, env.node, [csi_volume("v", "mine")]))
    [res] = await env.kubelet.publish_pod(pod)
    assert res.ok, res.error
    assert decoded(await env.api.get(SECRET, "b-secret", namespace)) == {"k": b"secret"}

    async def invalid_name_reported() -> list[dict[str, Any]]:
        events = await driver_events(env.api, namespace, "syncer", "FailedToCreateSecret")
        return [e for e in events if "is not a valid Secret name" in e["message"]]

    await wait_for(invalid_name_reported, timeout=20)
    await env.kubelet.unpublish_pod(pod)

    after = await env.api.get(SECRET, "b-secret", other_namespace)
    assert after["metadata"]["resourceVersion"] == b_secret["metadata"]["resourceVersion"]
    assert (await env.api.list(SPCPS, other_namespace))["items"] == []
    assert (await env.api.list(EVENT, other_namespace))["items"] == []


async def test_a_planted_provider_socket_is_refused(env: DriverEnv, namespace: str) -> None:
    planted = env.provider_dir / "planted.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(planted))
    listener.listen(1)
    os.chown(planted, 4242, -1)  # another user's socket in the root-owned provider directory
    try:
        await env.api.create(SPC, spc_manifest("planted", namespace, FOO, provider="planted"), namespace)
        pod = await create_pod(
            env.api, pod_manifest("victim-pod", namespace, env.node, [csi_volume("v", "planted")])
        )
        [res] = await env.kubelet.publish_pod(pod)
        assert res.error is not None
        details = res.error.details() or ""
        assert f"provider socket {planted} refused: owned by uid 4242" in details
        assert "--provider-socket-allowed-uids" in details
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()  # the driver never connected, so it never sent the pod's tokens
    finally:
        listener.close()
        planted.unlink()
