"""Sync as Kubernetes Secret on the real control plane: data, labels, owners and real garbage collection."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, events_for, read_volume, wait_for
from sscsi_kube import ApiError, KubeClient, Resource
from sscsi_kube.resources import POD, SECRET, SPC, SPCPS

MANIFESTS = Path(__file__).parent / "manifests"
DEPLOYMENT = Resource("apps", "v1", "deployments", "Deployment")
REPLICASET = Resource("apps", "v1", "replicasets", "ReplicaSet")
MANAGED = "secrets-store.csi.k8s.io/managed"
FOO_OBJECTS = objects_param(
    {"objectName": "foo", "objectVersion": "v1"}, {"objectName": "fookey", "objectVersion": "v1"}
)
FOOSECRET = {
    "secretName": "foosecret",
    "type": "Opaque",
    "labels": {"environment": "test"},
    "data": [{"objectName": "foo", "key": "username"}],
}
GC_TIMEOUT = 90.0


@pytest.fixture(scope="module")
async def env(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    async with driver_env(
        cluster.kubeconfig, cluster.logs_dir / "driver-secret-sync", node="sscsi-node-sync"
    ) as e:
        yield e


async def secret_or_none(api: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await api.get(SECRET, name, namespace)
    except ApiError as err:
        if err.not_found:
            return None
        raise


def decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def owner_names(secret: dict[str, Any]) -> list[str]:
    return sorted(o["name"] for o in secret["metadata"].get("ownerReferences") or [])


async def wait_gone(api: KubeClient, namespace: str, name: str) -> None:
    async def gone() -> bool:
        return await secret_or_none(api, namespace, name) is None

    await wait_for(gone, timeout=GC_TIMEOUT, interval=0.5)


async def delete_pod_now(api: KubeClient, namespace: str, name: str) -> None:
    await api.request("DELETE", POD.path(namespace, name), params={"gracePeriodSeconds": 0})


def counter(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + "{"))


async def test_synced_secret_feeds_env_and_is_collected_with_the_bare_pod(
    env: DriverEnv, cluster: Any, namespace: str
) -> None:
    applied = cluster.kubectl(
        "apply", "-n", namespace, "-f", str(MANIFESTS / "spc-v1-e2e-provider-sync.yaml")
    )
    assert applied.returncode == 0, applied.stderr
    pod = await create_pod(
        env.api, pod_manifest("sync-pod", namespace, env.node, [csi_volume("v", "e2e-provider-sync")])
    )
    [result] = await env.kubelet.publish_pod(pod)
    assert result.ok, result.error

    # synced before NodePublishVolume returned, so a container starting now finds it
    secret = await env.api.get(SECRET, "foosecret", namespace)
    assert decoded(secret) == {"username": b"secret"}
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"] == {"environment": "test", MANAGED: "true"}
    spcps = await env.api.get(SPCPS, f"sync-pod-{namespace}-e2e-provider-sync", namespace)
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "name": spcps["metadata"]["name"],
            "uid": spcps["metadata"]["uid"],
        }
    ]

    consumer = pod_manifest("env-consumer", namespace, env.node, [])
    consumer["spec"]["containers"][0]["env"] = [
        {"name": "USERNAME", "valueFrom": {"secretKeyRef": {"name": "foosecret", "key": "username"}}}
    ]
    created = await create_pod(env.api, consumer)
    ref = created["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref["key"] in decoded(await env.api.get(SECRET, ref["name"], namespace))

    # the bare pod goes: its SPCPS is collected, and with it the Secret
    await env.kubelet.unpublish_pod(pod)
    await delete_pod_now(env.api, namespace, "sync-pod")
    await wait_gone(env.api, namespace, "foosecret")


def deployment(name: str, namespace: str, node: str, spc: str) -> dict[str, Any]:
    spec = pod_manifest(name, namespace, node, [csi_volume("secrets", spc)])["spec"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            # nodeName: the pods land on the emulated node without the scheduler
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


async def running_pod(api: KubeClient, namespace: str, app: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        items = (await api.list(POD, namespace, labels={"app": app})).get("items") or []
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return live[0] if live else None

    pod: dict[str, Any] = await wait_for(found, timeout=60)
    return pod


async def owner_of(api: KubeClient, pod: dict[str, Any]) -> dict[str, str]:
    [ref] = pod["metadata"]["ownerReferences"]
    rs = await api.get(REPLICASET, ref["name"], pod["metadata"]["namespace"])
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": ref["name"], "uid": rs["metadata"]["uid"]}


async def test_two_deployments_share_the_secret_until_both_are_gone(env: DriverEnv, namespace: str) -> None:
    await env.api.create(
        SPC, spc_manifest("shared", namespace, FOO_OBJECTS, secretObjects=[FOOSECRET]), namespace
    )
    for app in ("app-a", "app-b"):
        await env.api.create(DEPLOYMENT, deployment(app, namespace, env.node, "shared"), namespace)
    pod_a = await running_pod(env.api, namespace, "app-a")
    pod_b = await running_pod(env.api, namespace, "app-b")
    owner_a, owner_b = await owner_of(env.api, pod_a), await owner_of(env.api, pod_b)

    [res] = await env.kubelet.publish_pod(pod_a)
    assert res.ok, res.error
    secret = await env.api.get(SECRET, "foosecret", namespace)
    assert secret["metadata"]["ownerReferences"] == [owner_a]
    [res] = await env.kubelet.publish_pod(pod_b)
    assert res.ok, res.error
    secret = await env.api.get(SECRET, "foosecret", namespace)
    assert secret["metadata"]["ownerReferences"] == [owner_a, owner_b]
    assert decoded(secret) == {"username": b"secret"}

    # deleting one workload: the garbage collector drops its (now dangling) owner reference
    await env.api.request(
        "DELETE", DEPLOYMENT.path(namespace, "app-a"), body={"propagationPolicy": "Background"}
    )
    await env.kubelet.unpublish_pod(pod_a)

    async def one_owner_left() -> bool:
        current = await secret_or_none(env.api, namespace, "foosecret")
        return current is not None and current["metadata"].get("ownerReferences") == [owner_b]

    await wait_for(one_owner_left, timeout=GC_TIMEOUT, interval=0.5)

    # deleting the last one: the Secret is collected
    await env.api.request(
        "DELETE", DEPLOYMENT.path(namespace, "app-b"), body={"propagationPolicy": "Background"}
    )
    await env.kubelet.unpublish_pod(pod_b)
    await wait_gone(env.api, namespace, "foosecret")


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("tls")
    for name in ("leaf", "ca"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/CN={name}.example",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt")],
            check=True, capture_output=True,
        )  # fmt: skip
    return {name: (d / name).read_bytes() for name in ("leaf.key", "leaf.crt", "ca.crt")}


async def test_tls_secret_gets_key_and_certificates_split(
    env: DriverEnv, namespace: str, tls_material: dict[str, bytes]
) -> None:
    key, leaf, ca = tls_material["leaf.key"], tls_material["leaf.crt"], tls_material["ca.crt"]
    bundle = (key + leaf + ca).decode()
    objects = objects_param({"objectName": "tls", "objectContent": bundle})
    secret_objects = [
        {
            "secretName": "ingress-tls",
            "type": "kubernetes.io/tls",
            "annotations": {"example.com/purpose": "ingress"},
            "data": [{"objectName": "tls", "key": "tls.key"}, {"objectName": "tls", "key": "tls.crt"}],
        }
    ]
    await env.api.create(
        SPC, spc_manifest("tls-spc", namespace, objects, secretObjects=secret_objects), namespace
    )
    pod = await create_pod(
        env.api, pod_manifest("tls-pod", namespace, env.node, [csi_volume("v", "tls-spc")])
    )
    [res] = await env.kubelet.publish_pod(pod)
    assert res.ok, res.error

    secret = await env.api.get(SECRET, "ingress-tls", namespace)
    assert secret["type"] == "kubernetes.io/tls"
    assert decoded(secret) == {"tls.key": key, "tls.crt": leaf + ca}
    annotations = secret["metadata"]["annotations"]
    assert annotations.pop("secrets-store.csi.k8s.io/definition").startswith("sha256:")
    assert annotations == {"example.com/purpose": "ingress", "secrets-store.csi.k8s.io/owner-spc": "tls-spc"}
    assert secret["metadata"]["labels"] == {MANAGED: "true"}
    await env.kubelet.unpublish_pod(pod)


async def test_missing_object_is_reported_and_other_secrets_still_sync(
    env: DriverEnv, namespace: str
) -> None:
    planted = "planted-sync-value-71b2"
    objects = objects_param({"objectName": "foo", "objectContent": planted})
    secret_objects = [
        {"secretName": "broken", "type": "Opaque", "data": [{"objectName": "nothere", "key": "k"}]},
        {"secretName": "good", "type": "Opaque", "data": [{"objectName": "foo", "key": "password"}]},
    ]
    await env.api.create(
        SPC, spc_manifest("partial", namespace, objects, secretObjects=secret_objects), namespace
    )
    pod = await create_pod(
        env.api, pod_manifest("partial-pod", namespace, env.node, [csi_volume("v", "partial")])
    )
    [res] = await env.kubelet.publish_pod(pod)
    assert res.ok, "a sync failure never fails the mount"
    assert read_volume(res.target) == {"foo": planted}

    assert decoded(await env.api.get(SECRET, "good", namespace)) == {"password": planted.encode()}
    assert await secret_or_none(env.api, namespace, "broken") is None

    async def warning() -> list[dict[str, Any]]:
        events = await events_for(env.api, namespace, "partial-pod")
        return [e for e in events if e["reason"] == "FailedToCreateSecret"]

    [event, *_] = await wait_for(warning, timeout=20)
    assert event["type"] == "Warning"
    assert "Secret broken" in event["message"]
    assert "file matching objectName nothere not found in the pod" in event["message"]
    await env.kubelet.unpublish_pod(pod)
    assert planted not in env.driver.log()
    assert all(planted not in e["message"] for e in await events_for(env.api, namespace, "partial-pod"))


async def test_refresh_resyncs_and_picks_up_spc_edits(cluster: Any, crds: None, namespace: str) -> None:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-secret-sync-rotation",
        node="sscsi-node-sync-rot",
        rotation=True,
        rotation_interval="2s",
    ) as renv:
        await renv.api.create(
            SPC, spc_manifest("edit-spc", namespace, FOO_OBJECTS, secretObjects=[FOOSECRET]), namespace
        )
        pod = await create_pod(
            renv.api, pod_manifest("edit-pod", namespace, renv.node, [csi_volume("v", "edit-spc")])
        )
        [res] = await renv.kubelet.publish_pod(pod)
        assert res.ok, res.error
        first = await renv.api.get(SECRET, "foosecret", namespace)
        assert decoded(first) == {"username": b"secret"}

        # a refresh that changes nothing writes nothing
        synced = counter(renv.metrics(), "sync_k8s_secret_total")
        await asyncio.sleep(2.2)
        [res] = await renv.kubelet.republish_pod(pod)
        assert res.ok, res.error
        assert counter(renv.metrics(), "sync_k8s_secret_total") == synced
        current = await renv.api.get(SECRET, "foosecret", namespace)
        assert current["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

        # an SPC edit adding an object and a secretObject shows up in the mount and as a Secret
        added = objects_param(
            {"objectName": "foo", "objectVersion": "v1"},
            {"objectName": "fookey", "objectVersion": "v1"},
            {"objectName": "extra", "objectContent": "added-later"},
        )
        extra = {"secretName": "extrasecret", "type": "Opaque", "data": [{"objectName": "extra", "key": "v"}]}
        patch = {"spec": {"parameters": {"objects": added}, "secretObjects": [FOOSECRET, extra]}}
        await renv.api.merge_patch(SPC, "edit-spc", patch, namespace)

        async def picked_up() -> bool:
            [again] = await renv.kubelet.republish_pod(pod)
            assert again.ok, again.error
            secret = await secret_or_none(renv.api, namespace, "extrasecret")
            return secret is not None and decoded(secret) == {"v": b"added-later"}

        await wait_for(picked_up, timeout=20, interval=0.5)
        assert read_volume(res.target)["extra"] == "added-later"

        # rotation reaches the synced Secret; owners are untouched by the data update
        renv.provider_control("/rotation?rotated=true")
        try:

            async def rotated() -> bool:
                [again] = await renv.kubelet.republish_pod(pod)
                assert again.ok, again.error
                secret = await renv.api.get(SECRET, "foosecret", namespace)
                return decoded(secret) == {"username": b"rotated"}

            await wait_for(rotated, timeout=20, interval=0.5)
            secret = await renv.api.get(SECRET, "foosecret", namespace)
            assert secret["metadata"]["ownerReferences"] == first["metadata"]["ownerReferences"]

            # a provider outage during refresh leaves the Secret as it was
            renv.provider_control("/fault?mode=unavailable")
            await asyncio.sleep(2.2)
            [failed] = await renv.kubelet.republish_pod(pod)
            assert failed.ok
            renv.provider_control("/fault?mode=none")
            after = await renv.api.get(SECRET, "foosecret", namespace)
            assert after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
        finally:
            renv.provider_control("/fault?mode=none")
            renv.provider_control("/rotation?rotated=false")
        await renv.kubelet.unpublish_pod(pod)


async def test_sync_can_be_turned_off(cluster: Any, crds: None, namespace: str) -> None:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-secret-sync-off",
        node="sscsi-node-sync-off",
        extra_args=("--enable-secret-sync=false",),
    ) as oenv:
        await oenv.api.create(
            SPC, spc_manifest("off-spc", namespace, FOO_OBJECTS, secretObjects=[FOOSECRET]), namespace
        )
        pod = await create_pod(
            oenv.api, pod_manifest("off-pod", namespace, oenv.node, [csi_volume("v", "off-spc")])
        )
        [res] = await oenv.kubelet.publish_pod(pod)
        assert res.ok, res.error
        assert await secret_or_none(oenv.api, namespace, "foosecret") is None
        assert "secret_sync=False" in oenv.driver.log()
        await oenv.kubelet.unpublish_pod(pod)
