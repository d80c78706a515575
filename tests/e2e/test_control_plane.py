"""The local control plane itself: apiserver ready, kube-controller-manager's controllers working."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cluster import Cluster
from sscsi_kube import KubeClient, Resource
from sscsi_kube.resources import SERVICE_ACCOUNT

GROUP = "test.sscsi.example.com"
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}
WIDGET = Resource(GROUP, "v1", "widgets", "Widget")
CONFIG_MAP = Resource("", "v1", "configmaps", "ConfigMap")

# kube-controller-manager learns about a new CRD kind only at its discovery resync, every 30 s
# (hard-coded). Until then the collector retries the owner lookup with exponential backoff, so on
# a controller manager that has never seen the kind, collection takes up to about 42 s; when it
# already knows the kind, about a second.
GC_TIMEOUT = 90.0


async def exists(kube: KubeClient, name: str, namespace: str) -> bool:
    return await kube.find(CONFIG_MAP, name, namespace) is not None


def config_map(name: str, namespace: str, owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}}


def test_apiserver_readyz(cluster: Cluster) -> None:
    assert cluster.readyz() == "ok"


async def test_garbage_collector_deletes_dependents_of_a_custom_resource(
    cluster: Cluster, kube: KubeClient, namespace: str
) -> None:
    cluster.apply(WIDGET_CRD)
    established = cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=30s"
    )
    assert established.returncode == 0, established.stderr

    widget = {
        "apiVersion": WIDGET.api_version,
        "kind": WIDGET.kind,
        "metadata": {"name": "owner", "namespace": namespace},
        "spec": {"size": 3},
    }
    owner = await kube.create(WIDGET, widget, namespace)
    assert owner.get("metadata") is not None and owner["metadata"].get("uid")
    reference = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": False,
    }
    await kube.create(CONFIG_MAP, config_map("owned", namespace, [reference]), namespace)
    # Control: an object without an owner must survive the collection.
    await kube.create(CONFIG_MAP, config_map("unowned", namespace), namespace)

    await kube.delete(WIDGET, "owner", namespace)
    start = time.monotonic()
    while await exists(kube, "owned", namespace):
        elapsed = time.monotonic() - start
        assert elapsed < GC_TIMEOUT, (
            f"ConfigMap owned by the deleted Widget still exists after {elapsed:.0f}s:"
            " kube-controller-manager's garbage collector is not working"
        )
        await asyncio.sleep(0.25)
    assert await exists(kube, "unowned", namespace)


async def test_default_service_account_is_created(kube: KubeClient, namespace: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if await kube.find(SERVICE_ACCOUNT, "default", namespace) is not None:
            return
        assert time.monotonic() < deadline, f"no default ServiceAccount in {namespace} after 30s"
        await asyncio.sleep(0.2)
