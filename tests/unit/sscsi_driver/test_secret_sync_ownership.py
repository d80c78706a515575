"""Secret sync is no confused deputy: unmanaged Secrets stay untouched, one SPC's definition owns a Secret."""

from __future__ import annotations

import base64
import copy
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge
from sscsi_driver import atomic_writer
from sscsi_driver.models import MANAGED_LABEL, SecretKeyRef, SecretObject, SecretProviderClass
from sscsi_driver.secret_desired import SyncError, build_secret
from sscsi_driver.sync_ownership import (
    DEFINITION_ANNOTATION,
    OWNER_ANNOTATION,
    REFUSED_REASON,
    Refusals,
    definition_hash,
)
from sscsi_kube import Obj
from sscsi_kube.resources import SECRET, SPC

from unit.sscsi_driver.sync_world import NS, PLANTED, World, opaque, rs_owner

VICTIM: Obj = {
    "metadata": {
        "name": "victim",
        "namespace": NS,
        "labels": {"team": "payments"},
        "annotations": {"owner": "someone-else"},
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "anchor", "uid": "cm-uid-1"},
        ],
    },
    "type": "Opaque",
    "data": {"keep": base64.b64encode(b"original").decode()},
}


def make_spc(name: str, *objects: SecretObject, params: str = "x") -> SecretProviderClass:
    return SecretProviderClass(NS, name, f"uid-{name}", 1, "e2e-provider", {"objects": params}, objects)


def stored(world: World, spc: SecretProviderClass) -> None:
    """The SPC as the apiserver holds it, for the syncer's lookups of other SPCs."""
    objects = [
        {
            "secretName": o.secret_name,
            "type": o.type,
            "labels": o.labels,
            "annotations": o.annotations,
            "data": [{"objectName": r.object_name, "key": r.key} for r in o.data],
        }
        for o in spc.secret_objects
    ]
    world.api.put(
        SPC,
        {
            "metadata": {"name": spc.name, "namespace": NS, "generation": spc.generation},
            "spec": {"provider": spc.provider, "parameters": spc.parameters, "secretObjects": objects},
        },
    )


def refused(world: World, secret: str, spc: str, reason: str) -> float | None:
    labels = {"namespace": NS, "secret": secret, "secret_provider_class": spc, "reason": reason}
    return world.registry.get_sample_value("sync_k8s_secret_refused", labels)


def decoded(secret: Obj) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


async def refusals(world: World) -> list[Obj]:
    return [e for e in await world.events_posted() if e["reason"] == REFUSED_REASON]


# ---- a Secret the driver did not create ----


async def test_unmanaged_secret_is_never_written_owned_or_deleted(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.api.put(SECRET, VICTIM)
    before = copy.deepcopy(world.api.secret("victim"))
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": PLANTED})
    s = make_spc("grab", opaque("victim", ("foo", "keep")), opaque("mine"))
    for _ in range(3):  # publish, then refreshes (rotation passes)
        await world.syncer.on_volume(vol, s)
        World.write(Path(vol.target), {"foo": PLANTED + b"-rotated"})

    assert world.api.secret("victim") == before
    assert ("delete", "secrets", "victim") not in world.api.calls
    assert ("replace", "secrets", "victim") not in world.api.calls
    assert decoded(world.api.secret("mine")) == {"username": PLANTED + b"-rotated"}  # the others sync
    assert world.syncer.pending_retries == {}  # not a transient failure: no retry storm

    [event] = await refusals(world)  # once per volume, not on every refresh
    assert event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == pod.uid
    message = event["message"]
    assert f"Secret {NS}/victim was not synced from SecretProviderClass grab" in message
    assert "was not created by the driver" in message
    assert f"kubectl label secret victim -n {NS} {MANAGED_LABEL}=true" in message
    assert refused(world, "victim", "grab", "unmanaged") == 1
    assert PLANTED.decode() not in caplog.text + message

    world.syncer.forget(vol.target)  # unpublished: the gauge goes with the volume
    assert refused(world, "victim", "grab", "unmanaged") is None


async def test_unmanaged_secret_survives_a_type_change(world: World) -> None:
    world.api.put(SECRET, VICTIM)
    before = copy.deepcopy(world.api.secret("victim"))
    pod = world.pod("web-1", [rs_owner("web")])
    s = make_spc("grab", opaque("victim", ("foo", "keep"), type="kubernetes.io/basic-auth"))
    assert await world.syncer.sync(world.volume(pod, {"foo": b"x"}), s)
    assert world.api.secret("victim") == before
    assert [c[0] for c in world.api.writes()] == ["create"]


async def test_secret_taken_back_by_its_owner_is_left_alone(world: World) -> None:
    """Removing the managed label is how an owner takes a Secret back: no write after that."""
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": b"v1"})
    s = make_spc("spc", opaque())
    await world.syncer.on_volume(vol, s)
    taken = copy.deepcopy(world.api.secret("foosecret"))
    del taken["metadata"]["labels"][MANAGED_LABEL]
    taken["data"] = {"username": base64.b64encode(b"by-hand").decode()}
    world.api.put(SECRET, taken)  # the watch drops it from the managed cache
    World.write(Path(vol.target), {"foo": b"v2"})
    await world.syncer.on_volume(vol, s)
    assert decoded(world.api.secret("foosecret")) == {"username": b"by-hand"}
    assert refused(world, "foosecret", "spc", "unmanaged") == 1


async def test_owner_hands_a_secret_over_with_the_managed_label(world: World) -> None:
    world.api.put(SECRET, VICTIM)
    pod = world.pod("web-1", [rs_owner("web")])
    vol = world.volume(pod, {"foo": b"from-provider"})
    s = make_spc("grab", opaque("victim", ("foo", "keep")))
    await world.syncer.on_volume(vol, s)
    assert refused(world, "victim", "grab", "unmanaged") == 1

    handed = copy.deepcopy(world.api.secret("victim"))
    handed["metadata"]["labels"][MANAGED_LABEL] = "true"
    world.api.put(SECRET, handed)  # kubectl label secret victim secrets-store.csi.k8s.io/managed=true
    await world.syncer.on_volume(vol, s)
    secret = world.api.secret("victim")
    assert decoded(secret) == {"keep": b"from-provider"}
    assert secret["metadata"]["labels"] == {"team": "payments", MANAGED_LABEL: "true"}
    assert secret["metadata"]["annotations"][OWNER_ANNOTATION] == "grab"
    assert [o["name"] for o in secret["metadata"]["ownerReferences"]] == ["anchor", "web"]
    assert refused(world, "victim", "grab", "unmanaged") is None


async def test_secret_of_an_upstream_installation_counts_as_created_by_the_driver(world: World) -> None:
    legacy = copy.deepcopy(VICTIM)
    legacy["metadata"]["name"] = "foosecret"
    legacy["metadata"]["labels"] = {MANAGED_LABEL: "true"}
    world.api.put(SECRET, legacy)
    pod = world.pod("web-1", [rs_owner("web")])
    s = make_spc("spc", opaque())
    assert await world.syncer.sync(world.volume(pod, {"foo": b"new"}), s)
    secret = world.api.secret("foosecret")
    assert decoded(secret) == {"username": b"new"}
    assert secret["metadata"]["annotations"][OWNER_ANNOTATION] == "spc"
    assert secret["metadata"]["annotations"][DEFINITION_ANNOTATION] == definition_hash(s, s.secret_objects[0])
    assert await world.events_posted() == []


# ---- two SecretProviderClasses naming the same Secret ----


async def test_conflicting_definition_is_never_applied(world: World) -> None:
    first = make_spc("first", opaque("shared", ("foo", "value")), params="first-objects")
    second = make_spc("second", opaque("shared", ("bar", "value")), params="second-objects")
    stored(world, first)
    stored(world, second)
    vol_a = world.volume(world.pod("a-1", [rs_owner("a")]), {"foo": b"a-v1"})
    vol_b = world.volume(world.pod("b-1", [rs_owner("b")]), {"bar": b"b-v1"})

    await world.syncer.on_volume(vol_a, first)
    await world.syncer.on_volume(vol_b, second)
    for version in (b"v2", b"v3"):  # rotation passes, in both orders
        World.write(Path(vol_b.target), {"bar": b"b-" + version})
        await world.syncer.on_volume(vol_b, second)
        World.write(Path(vol_a.target), {"foo": b"a-" + version})
        await world.syncer.on_volume(vol_a, first)
        await world.syncer.on_volume(vol_b, second)
        secret = world.api.secret("shared")
        assert decoded(secret) == {"value": b"a-" + version}
        assert [o["name"] for o in secret["metadata"]["ownerReferences"]] == ["a"]
        assert secret["metadata"]["annotations"][OWNER_ANNOTATION] == "first"

    [event] = await refusals(world)
    assert event["involvedObject"]["name"] == "b-1"
    assert "SecretProviderClass second" in event["message"]
    assert "SecretProviderClass first owns it with a different definition" in event["message"]
    assert refused(world, "shared", "second", "conflict") == 1
    assert refused(world, "shared", "first", "conflict") is None


async def test_identical_definitions_share_the_secret(world: World) -> None:
    one = make_spc("one", opaque("shared", ("foo", "value")))
    two = make_spc("two", opaque("shared", ("foo", "value")))
    stored(world, one)
    stored(world, two)
    vol_a = world.volume(world.pod("a-1", [rs_owner("a")]), {"foo": b"v1"})
    vol_b = world.volume(world.pod("b-1", [rs_owner("b")]), {"foo": b"v1"})
    await world.syncer.on_volume(vol_a, one)
    await world.syncer.on_volume(vol_b, two)
    secret = world.api.secret("shared")
    assert [o["name"] for o in secret["metadata"]["ownerReferences"]] == ["a", "b"]
    assert secret["metadata"]["annotations"][OWNER_ANNOTATION] == "one"
    # rotation lag: b's volume is newer for a moment; same definition, so not a conflict
    World.write(Path(vol_b.target), {"foo": b"v2"})
    await world.syncer.on_volume(vol_b, two)
    assert decoded(world.api.secret("shared")) == {"value": b"v2"}
    assert await world.events_posted() == []
    assert not any(c[:2] == ("get", "secretproviderclasses") for c in world.api.calls)


async def test_secret_passes_on_when_its_owner_no_longer_defines_it(world: World) -> None:
    first = make_spc("first", opaque("shared", ("foo", "value")))
    second = make_spc("second", opaque("shared", ("bar", "value")))
    stored(world, second)  # `first` was deleted after creating the Secret
    vol_a = world.volume(world.pod("a-1", [rs_owner("a")]), {"foo": b"a"})
    vol_b = world.volume(world.pod("b-1", [rs_owner("b")]), {"bar": b"b"})
    await world.syncer.on_volume(vol_a, first)
    await world.syncer.on_volume(vol_b, second)
    secret = world.api.secret("shared")
    assert decoded(secret) == {"value": b"b"}
    assert secret["metadata"]["annotations"][OWNER_ANNOTATION] == "second"


async def test_edited_owner_spc_wins_over_its_own_stale_volumes(world: World) -> None:
    old = make_spc("spc", opaque("shared", ("foo", "value")))
    new = make_spc("spc", opaque("shared", ("bar", "value")))
    vol_old = world.volume(world.pod("old-1", [rs_owner("r")]), {"foo": b"old"})
    vol_new = world.volume(world.pod("new-1", [rs_owner("r")]), {"bar": b"new"})
    await world.syncer.on_volume(vol_old, old)
    stored(world, new)  # the SPC is edited; one volume has refreshed since, the other not
    await world.syncer.on_volume(vol_new, new)
    assert decoded(world.api.secret("shared")) == {"value": b"new"}
    await world.syncer.on_volume(vol_old, old)  # e.g. the periodic resync of the old volume
    secret = world.api.secret("shared")
    assert decoded(secret) == {"value": b"new"}
    assert secret["metadata"]["annotations"][DEFINITION_ANNOTATION] == definition_hash(
        new, new.secret_objects[0]
    )
    assert await world.events_posted() == []


# ---- pure parts ----


def test_secret_objects_cannot_set_the_ownership_annotations(tmp_path: Path) -> None:
    World.write(tmp_path, {"foo": b"x"})
    obj = opaque(annotations={OWNER_ANNOTATION: "someone", DEFINITION_ANNOTATION: "x", "kept": "yes"})
    assert build_secret(obj, atomic_writer.read_mounted_files(tmp_path)).annotations == {"kept": "yes"}


@pytest.mark.parametrize("name", ["../../kube-system/secrets/x", "a/b", "UPPER", "x" * 254, "-a"])
def test_secret_names_that_are_not_object_names_are_refused(tmp_path: Path, name: str) -> None:
    World.write(tmp_path, {"foo": b"x"})
    with pytest.raises(SyncError, match="is not a valid Secret name"):
        build_secret(opaque(name), atomic_writer.read_mounted_files(tmp_path))


def test_definition_hash_covers_the_definition_not_the_order() -> None:
    def h(**changes: Any) -> str:
        obj_fields: dict[str, Any] = {
            "secret_name": "s",
            "type": "Opaque",
            "data": (SecretKeyRef("a", "k1"), SecretKeyRef("b", "k2")),
        }
        obj_fields.update(changes.pop("obj", {}))
        spc_fields: dict[str, Any] = {"provider": "p", "parameters": {"objects": "x"}}
        spc_fields.update(changes)
        obj = SecretObject(**obj_fields)
        spc = SecretProviderClass(NS, "n", "u", 1, secret_objects=(obj,), **spc_fields)
        return definition_hash(spc, obj)

    base = h()
    assert h(obj={"data": (SecretKeyRef("b", "k2"), SecretKeyRef(" a ", "k1"))}) == base
    assert h(obj={"secret_name": " s "}) == base
    for different in (
        h(provider="other"),
        h(parameters={"objects": "y"}),
        h(obj={"type": "kubernetes.io/tls"}),
        h(obj={"labels": {"l": "v"}}),
        h(obj={"data": (SecretKeyRef("a", "k1"),)}),
    ):
        assert different != base


def test_refusal_gauge_counts_volumes() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("g", "", ["namespace", "secret", "secret_provider_class", "reason"], registry=registry)
    refusals = Refusals(gauge)

    def value() -> float | None:
        return registry.get_sample_value(
            "g", {"namespace": "n", "secret": "s", "secret_provider_class": "c", "reason": "unmanaged"}
        )

    assert refusals.refuse("/t1", "n", "s", "c", "unmanaged")
    assert not refusals.refuse("/t1", "n", "s", "c", "unmanaged")
    assert refusals.refuse("/t2", "n", "s", "c", "unmanaged")
    assert value() == 2
    refusals.forget("/t1")
    assert value() == 1
    assert refusals.refuse("/t2", "n", "s", "c", "conflict")  # the reason changed: a new event
    assert value() is None
    refusals.clear("/t2", "s")
    assert len(refusals) == 0


async def test_secret_objects_beyond_the_bound_are_not_synced(world: World) -> None:
    world.syncer._max_secret_objects = 1  # --max-objects-per-volume=1
    pod = world.pod("web-1", [rs_owner("web")])
    s = make_spc("many", opaque("one"), opaque("two"))
    assert await world.syncer.sync(world.volume(pod, {"foo": b"x"}), s)
    assert world.api.writes() == []
    [event] = await world.events_posted()
    assert "2 secretObjects, more than --max-objects-per-volume=1; none synced" in event["message"]
