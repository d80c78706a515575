"""The node's pod cache: a pod about to mount one of our volumes starts its namespace's SPC watch."""

from __future__ import annotations

import asyncio
from typing import Any

from sscsi_driver.node_pods import slim_pod
from sscsi_kube.resources import POD

from unit.sscsi_driver.sync_world import NODE, World, eventually

DRIVER = "secrets-store.csi.k8s.io"


def pod(
    name: str, namespace: str, driver: str = DRIVER, phase: str = "Pending", **meta: Any
) -> dict[str, Any]:
    volumes = [
        {"name": "token", "projected": {"sources": []}},
        {"name": "secrets", "csi": {"driver": driver, "volumeAttributes": {"secretProviderClass": "spc"}}},
    ]
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", **meta},
        "spec": {"nodeName": NODE, "volumes": volumes, "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"}]},
    }


async def test_a_pod_about_to_mount_our_volume_warms_its_namespace_only(world: World) -> None:
    await world.pods.wait_synced(5)
    world.api.put(POD, pod("running", "ns-running", phase="Running"))
    world.api.put(POD, pod("other-driver", "ns-other", driver="other.csi.k8s.io"))
    world.api.put(POD, pod("leaving", "ns-leaving", deletionTimestamp="2026-12-01T00:00:00Z"))
    world.api.put(POD, pod("landing", "ns-landing"))
    await eventually(lambda: world.pods.get("ns-landing", "landing") is not None)
    assert world.spcs.namespaces == ["ns-landing"]
    [informer] = world.spcs._informers.values()
    await asyncio.wait_for(informer.wait_synced(), 5)  # its SPC state is there before any publish


async def test_a_pod_that_is_already_there_warms_at_start(world: World) -> None:
    await world.stop()
    world.api.put(POD, pod("landing", "ns-landing"))
    world.pods.start()
    await eventually(lambda: world.spcs.namespaces == ["ns-landing"])


def test_only_what_the_readers_use_is_kept() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid"}
    full = pod("web-1", "ns", ownerReferences=[owner], labels={"app": "web"}, resourceVersion="7")
    full["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    assert slim_pod(full, DRIVER) == {
        "metadata": {
            "name": "web-1",
            "namespace": "ns",
            "uid": "uid-web-1",
            "resourceVersion": "7",
            "ownerReferences": [owner],
        },
        "spec": {"volumes": [full["spec"]["volumes"][1]]},
        "status": {"phase": "Pending"},
    }
