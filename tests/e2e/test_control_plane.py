"""The local control plane itself: apiserver ready, kube-controller-manager's controllers working."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cluster import Cluster
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import ConfigMap, ServiceAccount

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
Widget = create_namespaced_resource(GROUP, "v1", "Widget", "widgets")

# kube-controller-manager learns about a new CRD kind only at its discovery resync, every 30 s
# (hard-coded). Until then the collector retries the owner lookup with exponential backoff, so on
# a controller manager that has never seen the kind, collection takes up to about 42 s; when it
# already knows the kind, about a second.
GC_TIMEOUT = 90.0


async def exists(kube: AsyncClient, name: str, namespace: str) -> bool:
    try:
        await kube.get(ConfigMap, name, namespace=namespace)
    except ApiError as err:
        if err.status.code == 404:
            return False
        raise
    return True


def test_apiserver_readyz(cluster: Cluster) -> None:
    assert cluster.readyz() == "ok"


async def test_garbage_collector_deletes_dependents_of_a_custom_resource(
    cluster: Cluster, kube: AsyncClient, namespace: str
) -> None:
    cluster.apply(WIDGET_CRD)
    established = cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=30s"
    )
    assert established.returncode == 0, established.stderr

    owner = await kube.create(
        Widget(metadata=ObjectMeta(name="owner", namespace=namespace), spec={"size": 3})
    )
    assert owner.metadata is not None and owner.metadata.uid
    reference = OwnerReference(
        apiVersion=f"{GROUP}/v1",
        kind="Widget",
        name="owner",
        uid=owner.metadata.uid,
        blockOwnerDeletion=False,
    )
    owned = ObjectMeta(name="owned", namespace=namespace, ownerReferences=[reference])
    await kube.create(ConfigMap(metadata=owned, data={"k": "v"}))
    # Control: an object without an owner must survive the collection.
    await kube.create(ConfigMap(metadata=ObjectMeta(name="unowned", namespace=namespace), data={"k": "v"}))

    await kube.delete(Widget, "owner", namespace=namespace)
    start = time.monotonic()
    while await exists(kube, "owned", namespace):
        elapsed = time.monotonic() - start
        assert elapsed < GC_TIMEOUT, (
            f"ConfigMap owned by the deleted Widget still exists after {elapsed:.0f}s:"
            " kube-controller-manager's garbage collector is not working"
        )
        await asyncio.sleep(0.25)
    assert await exists(kube, "unowned", namespace)


async def test_default_service_account_is_created(kube: AsyncClient, namespace: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await kube.get(ServiceAccount, "default", namespace=namespace)
            return
        except ApiError as err:
            if err.status.code != 404:
                raise
        assert time.monotonic() < deadline, f"no default ServiceAccount in {namespace} after 30s"
        await asyncio.sleep(0.2)
