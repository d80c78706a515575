"""SecretSyncer against an in-memory apiserver: data, owners, optimistic updates, errors and retries."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path

import pytest
from sscsi_driver.models import (
    MANAGED_LABEL,
    NODE_LABEL,
    PodRef,
)
from sscsi_driver.secret_writer import FAILED_REASON
from sscsi_driver.sync_ownership import DEFINITION_ANNOTATION, OWNER_ANNOTATION, definition_hash
from sscsi_kube import ApiError, Obj, Resource
from sscsi_kube.resources import SECRET, SPCPS

from unit.sscsi_driver.sync_world import (
    NODE,
    NS,
    PLANTED,
    FakeApi,
    World,
    b64,
    eventually,
    opaque,
    ref_of,
    rs_owner,
    spc,
)

# ---- the syncer ----


async def test_creates_secret_owned_by_pod_owner_then_no_requests(world: World) -> None:
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": b"secret", "fookey": b"key"})
    s = spc(opaque(labels={"environment": "test"}, annotations={"note": "synced"}))
    await world.syncer.on_volume(vol, s)

    secret = world.api.secret("foosecret")
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"username": b64(b"secret")}
    assert secret["metadata"]["labels"] == {"environment": "test", MANAGED_LABEL: "true"}
    assert secret["metadata"]["annotations"] == {
        "note": "synced",
        OWNER_ANNOTATION: "spc",
        DEFINITION_ANNOTATION: definition_hash(s, s.secret_objects[0]),
    }
    assert secret["metadata"]["ownerReferences"] == [ref_of(rs_owner("web"))]
    assert world.synced_total() == 1
    assert world.registry.get_sample_value("k8s_secret_duration_sec_count", {"os_type": "linux"}) == 1
    assert world.syncer.pending_retries == {}

    world.api.calls.clear()
    for _ in range(3):  # refreshes with nothing changed: answered from the caches
        await world.syncer.on_volume(vol, s)
    assert world.api.calls == []
    assert world.synced_total() == 1


async def test_watches_are_filtered(world: World) -> None:
    pod = world.pod("p", [rs_owner("r")])
    await world.syncer.on_volume(world.volume(pod, {"foo": b"s"}), spc(opaque()))
    informers = {repr(i) for i in (world.pods, world.syncer._secrets)}
    assert informers == {
        "Informer(pods, ns=None, labels={}, fields={'spec.nodeName': 'node-a'})",
        f"Informer(secrets, ns=None, labels={{'{MANAGED_LABEL}': 'true'}}, fields={{}})",
    }


async def test_spc_without_secret_objects_costs_nothing(world: World) -> None:
    pod = world.pod("p")
    await world.pods.wait_synced()
    world.api.calls.clear()
    await world.syncer.on_volume(world.volume(pod, {"foo": b"s"}), spc())
    assert world.api.calls == []
    assert world.syncer._secrets is None


async def test_bare_pod_is_owned_by_its_spcps(world: World) -> None:
    pod = world.pod("bare")
    status = world.api.put(
        SPCPS, {"metadata": {"name": f"bare-{NS}-spc", "namespace": NS, "labels": {NODE_LABEL: NODE}}}
    )
    world.spcps.upsert_local(status)
    await world.syncer.on_volume(world.volume(pod, {"foo": b"s"}), spc(opaque()))
    assert world.api.secret("foosecret")["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "name": f"bare-{NS}-spc",
            "uid": status["metadata"]["uid"],
        }
    ]
    assert ("get", "secretproviderclasspodstatuses", f"bare-{NS}-spc") not in world.api.calls


async def test_spcps_cache_miss_falls_back_to_get(world: World) -> None:
    pod = world.pod("bare")
    world.api.put(SPCPS, {"metadata": {"name": f"bare-{NS}-spc", "namespace": NS}})
    await world.syncer.on_volume(world.volume(pod, {"foo": b"s"}), spc(opaque()))
    assert world.api.secret("foosecret")["metadata"]["ownerReferences"][0]["kind"] == (
        "SecretProviderClassPodStatus"
    )
    assert ("get", "secretproviderclasspodstatuses", f"bare-{NS}-spc") in world.api.calls


async def test_pod_cache_miss_falls_back_to_get(world: World) -> None:
    pod = world.pod("late", [rs_owner("r")])
    await world.syncer.sync(world.volume(pod, {"foo": b"s"}), spc(opaque("other")))  # starts the caches
    world.api.store[("pods", NS, "late2")] = {
        "metadata": {"name": "late2", "namespace": NS, "uid": "u2", "ownerReferences": [rs_owner("r2")]},
        "spec": {"nodeName": NODE},
    }  # not seen by the (quiet) watch
    vol = world.volume(PodRef(NS, "late2", "u2"), {"foo": b"s"})
    assert await world.syncer.sync(vol, spc(opaque()))
    assert ("get", "pods", "late2") in world.api.calls
    assert world.api.secret("foosecret")["metadata"]["ownerReferences"] == [ref_of(rs_owner("r2"))]


async def test_updates_keep_every_existing_owner(world: World) -> None:
    """Upstream #2051: an update must not wipe owners added by other pods or nodes."""
    other_node_owner = ref_of(rs_owner("api"))
    world.api.put(
        SECRET,
        {
            "metadata": {
                "name": "foosecret",
                "namespace": NS,
                "labels": {MANAGED_LABEL: "true", "kept": "yes"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "ownerReferences": [other_node_owner],
            },
            "type": "Opaque",
            "data": {"username": b64(b"old"), "stale": b64(b"x")},
        },
    )
    pod = world.pod("web-1", [rs_owner("web")])
    await world.syncer.on_volume(world.volume(pod, {"foo": b"new"}), spc(opaque()))
    secret = world.api.secret("foosecret")
    assert secret["metadata"]["ownerReferences"] == [other_node_owner, ref_of(rs_owner("web"))]
    assert secret["data"] == {"username": b64(b"new")}  # data is ours: exactly the listed keys
    assert secret["metadata"]["labels"] == {MANAGED_LABEL: "true", "kept": "yes"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in secret["metadata"]["annotations"]


async def test_conflict_is_retried_from_the_fresh_object(world: World) -> None:
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": b"v1"})
    s = spc(opaque())
    await world.syncer.on_volume(vol, s)

    def other_node_adds_owner(api: FakeApi, _body: Obj) -> None:
        current = copy.deepcopy(api.secret("foosecret"))
        current["metadata"]["ownerReferences"].append(ref_of(rs_owner("api")))
        api.put(SECRET, current)

    world.api.before_replace = other_node_adds_owner
    World.write(Path(vol.target), {"foo": b"v2"})
    await world.syncer.on_volume(vol, s)
    secret = world.api.secret("foosecret")
    assert secret["data"] == {"username": b64(b"v2")}
    assert [o["name"] for o in secret["metadata"]["ownerReferences"]] == ["web", "api"]
    assert [c[0] for c in world.api.writes()] == ["create", "replace", "replace"]
    assert world.synced_total() == 2


async def test_two_workloads_sharing_an_spc_give_two_owners(world: World) -> None:
    a = world.volume(world.pod("a-1", [rs_owner("a")]), {"foo": b"s"})
    b = world.volume(world.pod("b-1", [rs_owner("b")]), {"foo": b"s"})
    s = spc(opaque())
    await asyncio.gather(world.syncer.on_volume(a, s), world.syncer.on_volume(b, s))
    owners = world.api.secret("foosecret")["metadata"]["ownerReferences"]
    assert sorted(o["name"] for o in owners) == ["a", "b"]
    world.api.calls.clear()
    await asyncio.gather(world.syncer.on_volume(a, s), world.syncer.on_volume(b, s))
    assert world.api.writes() == []


async def test_type_change_recreates_with_owners(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.api.put(
        SECRET,
        {
            "metadata": {
                "name": "foosecret",
                "namespace": NS,
                "labels": {MANAGED_LABEL: "true"},
                "ownerReferences": [ref_of(rs_owner("api"))],
            },
            "type": "Opaque",
            "data": {"username": b64(b"secret")},
        },
    )
    old_uid = world.api.secret("foosecret")["metadata"]["uid"]
    pod = world.pod("web-1", [rs_owner("web")])
    caplog.set_level(logging.INFO)
    await world.syncer.on_volume(
        world.volume(pod, {"foo": b"secret"}), spc(opaque(type="kubernetes.io/basic-auth"))
    )
    secret = world.api.secret("foosecret")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["metadata"]["uid"] != old_uid
    assert [o["name"] for o in secret["metadata"]["ownerReferences"]] == ["api", "web"]
    assert [c[0] for c in world.api.writes()] == ["delete", "create"]
    assert any("immutable" in r.getMessage() for r in caplog.records)


async def test_never_adopts_an_unlabelled_secret_of_the_same_name(world: World) -> None:
    """Upstream overwrites it, labels it and lets GC delete it; see test_secret_sync_ownership."""
    world.api.put(SECRET, {"metadata": {"name": "foosecret", "namespace": NS}, "data": {}})
    before = copy.deepcopy(world.api.secret("foosecret"))
    pod = world.pod("web-1", [rs_owner("web")])
    assert await world.syncer.sync(world.volume(pod, {"foo": b"s"}), spc(opaque()))
    assert world.api.secret("foosecret") == before
    assert [c[0] for c in world.api.writes()] == ["create"]  # refused by the apiserver: it exists


async def test_missing_file_reports_and_other_secrets_still_sync(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": PLANTED})
    s = spc(opaque("broken", ("nothere", "k")), opaque("good"), opaque("untyped", type=""))
    await world.syncer.on_volume(vol, s)

    assert world.api.secret("good")["data"] == {"username": b64(PLANTED)}
    events = await world.events_posted()
    assert {(e["type"], e["reason"]) for e in events} == {("Warning", FAILED_REASON)}
    messages = sorted(e["message"] for e in events)
    assert messages == [
        "failed to sync Secret broken of SecretProviderClass spc: "
        "file matching objectName nothere not found in the pod",
        "failed to sync Secret untyped of SecretProviderClass spc: "
        "type is not set for Secret untyped (e.g. Opaque or kubernetes.io/tls)",
    ]
    assert all(e["involvedObject"]["uid"] == pod.uid for e in events)
    assert world.syncer.pending_retries == {vol.target: 1}

    # the retry re-reads the files: once the object appears, the Secret syncs and retries stop
    World.write(Path(vol.target), {"foo": PLANTED, "nothere": b"late"})
    fixed = spc(opaque("broken", ("nothere", "k")), opaque("good"))
    await world.syncer.on_volume(vol, fixed)
    assert world.api.secret("broken")["data"] == {"k": b64(b"late")}
    assert world.syncer.pending_retries == {}
    assert PLANTED.decode() not in caplog.text


async def test_retry_with_backoff_until_fixed(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": b"s"})
    await world.syncer.on_volume(vol, spc(opaque("late", ("later", "k"))))

    def delays() -> list[float]:
        return [r.delay_s for r in caplog.records if r.getMessage() == "secret sync will be retried"]

    await eventually(lambda: len(delays()) >= 4)  # doubling from retry_initial, capped at retry_max
    assert delays()[:4] == [0.05, 0.1, 0.2, 0.2]
    World.write(Path(vol.target), {"foo": b"s", "later": b"v"})
    for _ in range(20):
        if ("secrets", NS, "late") in world.api.store:
            break
        await asyncio.sleep(0.05)
    assert world.api.secret("late")["data"] == {"k": b64(b"v")}
    await asyncio.sleep(0)
    assert world.syncer.pending_retries == {}


async def test_forget_and_unmount_stop_retries(world: World) -> None:
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": b"s"})
    await world.syncer.on_volume(vol, spc(opaque("x", ("missing", "k"))))
    assert vol.target in world.syncer.pending_retries
    world.syncer.forget(vol.target)
    assert world.syncer.pending_retries == {}

    await world.syncer.on_volume(vol, spc(opaque("x", ("missing", "k"))))
    world.mounted.clear()  # unpublished without forget(): the retry notices and stops
    await asyncio.sleep(0.2)
    assert world.syncer.pending_retries == {}
    events = await world.events_posted()
    assert len(events) == 2


async def test_forbidden_reports_the_rbac_hint(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.api.failures[("create", "secrets")] = [
        ApiError(403, "Forbidden", 'secrets is forbidden: User "x" cannot create resource "secrets"')
    ]
    pod = world.pod("web-1", [rs_owner("web")])
    await world.syncer.on_volume(world.volume(pod, {"foo": b"s"}), spc(opaque()))
    [event] = await world.events_posted()
    assert "cannot create resource" in event["message"]
    assert "enable secret sync in the ClusterCSIDriver" in event["message"]
    assert any(getattr(r, "hint", "").startswith("the driver may not write") for r in caplog.records)


async def test_transport_errors_do_not_escape(world: World) -> None:
    pod = world.pod("web-1", [rs_owner("web")])

    real_create = world.api.create

    async def broken(res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        if res is SECRET:
            raise ConnectionResetError("apiserver went away")
        return await real_create(res, obj, namespace)

    world.api.create = broken  # type: ignore[method-assign]
    await world.syncer.on_volume(world.volume(pod, {"foo": b"s"}), spc(opaque()))
    [event] = await world.events_posted()
    assert "request failed: ConnectionResetError" in event["message"]


async def test_gone_or_terminating_pod_is_skipped(world: World) -> None:
    gone = world.volume(PodRef(NS, "ghost", "uid-ghost"), {"foo": b"s"})
    assert await world.syncer.sync(gone, spc(opaque()))
    pod = world.pod("dying", [rs_owner("web")])
    world.api.store[("pods", NS, "dying")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await world.pods.stop()  # a direct store edit: the restarted watch sees it
    world.pods.start()
    assert await world.syncer.sync(world.volume(pod, {"foo": b"s"}), spc(opaque()))
    assert ("secrets", NS, "foosecret") not in world.api.store
    assert await world.events_posted() == []


async def test_stale_pod_uid_is_not_an_owner(world: World) -> None:
    world.pod("web-1", [rs_owner("new")])  # a newer pod of the same name
    vol = world.volume(PodRef(NS, "web-1", "an-old-uid"), {"foo": b"s"})
    assert await world.syncer.sync(vol, spc(opaque()))
    assert ("secrets", NS, "foosecret") not in world.api.store


async def test_events_and_logs_never_carry_secret_bytes(
    world: World, caplog: pytest.LogCaptureFixture, pem: tuple[bytes, bytes]
) -> None:
    caplog.set_level(logging.DEBUG)
    key, cert = pem
    pod = world.pod("web-1", [rs_owner("web")])
    broken_key = key.replace(key.splitlines()[3], key.splitlines()[3][:-2] + b"!!")
    vol = world.volume(pod, {"bundle": broken_key + cert, "foo": PLANTED})
    s = spc(
        opaque("tls", ("bundle", "tls.key"), ("bundle", "tls.crt"), type="kubernetes.io/tls"),
        opaque("plain"),
    )
    await world.syncer.on_volume(vol, s)
    [event] = await world.events_posted()
    assert "bad TLS material in objectName bundle for key tls.key" in event["message"]
    everything = caplog.text + event["message"]
    assert PLANTED.decode() not in everything
    for line in (key + cert).splitlines()[1:-1]:
        assert line.decode()[:16] not in everything


async def test_periodic_resync_restores_a_deleted_secret(tmp_path: Path) -> None:
    w = World(tmp_path, resync_interval=0.1)
    try:
        pod = w.pod("web-1", [rs_owner("web")])
        await w.syncer.on_volume(w.volume(pod, {"foo": b"s"}), spc(opaque()))
        uid = w.api.secret("foosecret")["metadata"]["uid"]
        await w.api.delete(SECRET, "foosecret", NS)  # e.g. kubectl delete secret
        await eventually(lambda: ("secrets", NS, "foosecret") in w.api.store)
        restored = w.api.secret("foosecret")
        assert restored["metadata"]["uid"] != uid
        assert restored["metadata"]["ownerReferences"] == [ref_of(rs_owner("web"))]

        # unchanged afterwards: resyncs send no request
        await asyncio.sleep(0.15)
        w.api.calls.clear()
        await asyncio.sleep(0.3)
        assert w.api.calls == []

        w.mounted.clear()  # unpublished: the resync drops the volume
        await eventually(lambda: w.syncer._volumes == {})
    finally:
        await w.stop()


async def test_sync_finishes_when_kubelet_gives_up(world: World) -> None:
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": b"s"})
    started, release = asyncio.Event(), asyncio.Event()
    real_create = world.api.create

    async def slow_create(res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        if res is SECRET:
            started.set()
            await release.wait()
        return await real_create(res, obj, namespace)

    world.api.create = slow_create  # type: ignore[method-assign]
    call = asyncio.create_task(world.syncer.on_volume(vol, spc(opaque())))
    await asyncio.wait_for(started.wait(), 2)
    call.cancel()  # the NodePublishVolume deadline passed
    with pytest.raises(asyncio.CancelledError):
        await call
    release.set()
    await eventually(lambda: ("secrets", NS, "foosecret") in world.api.store)
