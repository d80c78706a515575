"""The driver's ClusterRoles are the least that works, with secret sync on and off, proven by audit log.

The driver runs as a ServiceAccount holding exactly the rules of the ClusterRoles the operator renders
(copied under per-test names, so tests sharing the cluster never collide) and goes through publish,
rotation, a Secret type change, a refused Secret, unpublish and pod deletion. The apiserver's audit
log of that ServiceAccount then proves:

- sufficient: no request was refused, and each is allowed by a rule of the rendered roles;
- minimal: every (apiGroup, resource, verb) the roles grant was used.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import Cluster
from harness.audit_log import requests_by
from harness.env import csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, wait_for
from sscsi_kube import ApiError
from sscsi_kube.resources import POD, SECRET, SPC, SPCPS
from sscsi_operator.render import render
from sscsi_operator.settings import Settings
from sscsi_operator.spec import parse_spec

DRIVER_ROLES = ("secretproviderclasses-role", "secretprovidersyncing-role")

# Granted for a path this run does not take, and why. Keep it short.
ALLOWED_UNUSED = {
    "get secrets-store.csi.x-k8s.io/secretproviderclasses": "an SPC newer than the namespace's watch "
    "(cache miss) is read once (kube/cache.py NamespacedCache.get)",
    "get secrets-store.csi.x-k8s.io/secretproviderclasspodstatuses": "re-read after a conflict or when "
    "a pod of the same name left one behind on another node (test_faults: StatefulSet node move)",
    "get core/pods": "a pod newer than the node's pod watch is read once (secret_sync._pod)",
}
SERVICE_ACCOUNT = "driver-under-audit"


@dataclass(frozen=True, order=True)
class Grant:
    group: str
    resource: str  # with "/subresource"
    verb: str

    def __str__(self) -> str:
        return f"{self.verb} {self.group or 'core'}/{self.resource}"


def grants(rules: Iterable[Mapping[str, Any]]) -> set[Grant]:
    return {
        Grant(group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups") or ()
        for resource in rule.get("resources") or ()
        for verb in rule.get("verbs") or ()
    }


def driver_roles(namespace: str, sync: bool) -> list[dict[str, Any]]:
    spec = {"driverConfig": {"secretsStore": {"syncSecret": {"enabled": sync}}}}
    settings = Settings.from_environment({"OPERAND_NAMESPACE": namespace})
    return [
        m
        for m in render(parse_spec(spec), settings)
        if m["kind"] == "ClusterRole" and m["metadata"]["name"] in DRIVER_ROLES
    ]


def grant_of(event: Mapping[str, Any]) -> Grant | None:
    ref = event.get("objectRef") or {}
    if not ref.get("resource"):
        return None  # discovery and other non-resource URLs
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return Grant(ref.get("apiGroup") or "", resource, event["verb"])


def grants_of(event: Mapping[str, Any]) -> set[Grant]:
    """What the request needed: a watch that streams the collection's current state first
    (sendInitialEvents, WatchList) stands in for a list, which the driver sends instead where an
    apiserver lacks WatchList; so it needs the list grant as well."""
    grant = grant_of(event)
    if grant is None:
        return set()
    if grant.verb == "watch" and "sendInitialEvents=true" in str(event.get("requestURI") or ""):
        return {grant, Grant(grant.group, grant.resource, "list")}
    return {grant}


@dataclass(frozen=True)
class AuditedDriver:
    username: str
    kubeconfig: Path
    granted: set[Grant]


@pytest.fixture
def audited_driver(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[AuditedDriver]:
    sync = bool(request.param)
    roles = driver_roles(namespace, sync)
    assert [r["metadata"]["name"] for r in roles] == list(DRIVER_ROLES[: 2 if sync else 1])
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT}}
    ]
    for role in roles:
        name = f"{role['metadata']['name']}-{namespace}"
        objects.append({**role, "metadata": {"name": name}})
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}],
            }
        )
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=doc)
    assert out.returncode == 0, out.stderr
    try:
        token = cluster.kubectl("create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration=1h")
        assert token.returncode == 0, token.stderr
        admin = yaml.safe_load(cluster.kubeconfig.read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "driver", "user": {"token": token.stdout.strip()}}],
            "contexts": [{"name": "driver", "context": {"cluster": "c", "user": "driver"}}],
            "current-context": "driver",
        }
        kubeconfig = tmp_path / "driver.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        kubeconfig.chmod(0o600)
        yield AuditedDriver(
            username=f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
            kubeconfig=kubeconfig,
            granted=grants(rule for role in roles for rule in role["rules"]),
        )
    finally:
        cluster_scoped = [o for o in objects if o["kind"] != "ServiceAccount"]
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_scoped})
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=doc)


async def exercise(cluster: Cluster, driver: AuditedDriver, namespace: str, sync: bool) -> None:
    """Everything the driver does for pods: publish, rotation, sync, a refusal, unpublish, deletion."""
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / f"driver-rbac-{'sync' if sync else 'nosync'}",
        node=f"sscsi-node-rbac-{'sync' if sync else 'nosync'}",
        rotation=True,
        rotation_interval="1s",
        extra_args=(f"--kubeconfig={driver.kubeconfig}", f"--enable-secret-sync={str(sync).lower()}"),
    ) as env:
        api = env.api  # the emulated kubelet's admin client
        await api.create(
            SECRET,
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-ours"}, "data": {}},
            namespace,
        )
        objects = objects_param({"objectName": "foo", "objectVersion": "v1"})
        secret_objects = [
            {"secretName": "synced", "type": "Opaque", "data": [{"objectName": "foo", "key": "k"}]},
            {"secretName": "not-ours", "type": "Opaque", "data": [{"objectName": "foo", "key": "k"}]},
        ]
        await api.create(
            SPC, spc_manifest("spc", namespace, objects, secretObjects=secret_objects), namespace
        )
        pod = await create_pod(api, pod_manifest("audited", namespace, env.node, [csi_volume("v", "spc")]))
        [res] = await env.kubelet.publish_pod(pod)
        assert res.ok, res.error

        env.provider_control("/rotation?rotated=true")
        try:
            await asyncio.sleep(1.2)
            [res] = await env.kubelet.republish_pod(pod)
            assert res.ok, res.error
        finally:
            env.provider_control("/rotation?rotated=false")
        if sync:
            secret_objects[0]["type"] = "example.com/custom"  # immutable: delete and recreate
            await api.merge_patch(SPC, "spc", {"spec": {"secretObjects": secret_objects}}, namespace)

            async def recreated() -> bool:
                await asyncio.sleep(1.1)
                [again] = await env.kubelet.republish_pod(pod)
                assert again.ok, again.error
                try:
                    secret = await api.get(SECRET, "synced", namespace)
                except ApiError as err:  # between the delete and the create
                    assert err.not_found
                    return False
                return bool(secret["type"] == "example.com/custom")

            await wait_for(recreated, timeout=30, interval=0.2)
            assert base64.b64decode((await api.get(SECRET, "synced", namespace))["data"]["k"]) == b"secret"
        await env.kubelet.unpublish_pod(pod)
        await api.request("DELETE", POD.path(namespace, "audited"), params={"gracePeriodSeconds": 0})

        async def status_collected() -> bool:
            try:
                await api.get(SPCPS, f"audited-{namespace}-spc", namespace)
                return False
            except ApiError as err:
                return err.not_found

        await wait_for(status_collected, timeout=90, interval=0.5)


@pytest.mark.parametrize("audited_driver", [False, True], indirect=True, ids=["sync-off", "sync-on"])
async def test_driver_roles_are_sufficient_and_minimal(
    cluster: Cluster, audited_driver: AuditedDriver, namespace: str
) -> None:
    sync = "secrets" in {g.resource for g in audited_driver.granted}
    started = time.time() - 1
    await exercise(cluster, audited_driver, namespace, sync)
    await asyncio.sleep(1)  # the last watches' completions reach the audit log as connections close
    events = requests_by(cluster.logs_dir, audited_driver.username, started)
    assert events, f"no audit events of {audited_driver.username} in {cluster.logs_dir}"

    refused = sorted(
        {
            f"{e['verb']} {e.get('requestURI')}"
            for e in events
            if (e.get("responseStatus") or {}).get("code") == 403
            or (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
        }
    )
    assert refused == [], "requests the roles do not allow"
    used = {g for event in events for g in grants_of(event)}
    assert sorted(map(str, used - audited_driver.granted)) == []
    unused = sorted(set(map(str, audited_driver.granted - used)) - set(ALLOWED_UNUSED))
    assert not unused, f"granted but never needed: {unused}"
