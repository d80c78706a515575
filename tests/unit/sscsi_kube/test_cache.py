"""Watch-backed caches: list, then follow the watch; relist when the version expires; idle informers stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from sscsi_kube import ApiError, Informer, NamespacedCache
from sscsi_kube.resources import SPC

from unit.sscsi_kube.mock_api import MockApi, Request, Response, status


def _spc(name: str, rv: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


async def _quiet() -> AsyncIterator[bytes]:
    """A watch on which nothing happens (until the informer stops and cancels it)."""
    await asyncio.sleep(3600)
    yield b""


class Script:
    """Lists return `listed`; the first watch streams `events`, later watches hang (as an idle watch does).

    A watch asking for its initial events (WatchList) first streams `listed` as ADDED events and the
    end-of-initial-events bookmark when `watch_list`; else it is refused with 422, as an apiserver
    without the feature does.
    """

    def __init__(
        self, listed: list[dict[str, object]], events: list[dict[str, object]], watch_list: bool
    ) -> None:
        self.listed = listed
        self.events = events
        self.watch_list = watch_list
        self.watches = 0
        self.lists = 0
        self.gets: list[str] = []

    def __call__(self, request: Request) -> Response:
        params = request.url.params
        if params.get("watch") != "true":
            name = request.url.path.rsplit("/", 1)[1]
            if name != "secretproviderclasses":
                self.gets.append(name)
                found = [o for o in self.listed if o["metadata"]["name"] == name]  # type: ignore[index]
                if found:
                    return Response(200, json=found[0])
                return status(404, "NotFound", f"{name} not found")
            self.lists += 1
            return Response(200, json={"items": self.listed, "metadata": {"resourceVersion": "10"}})
        initial: list[dict[str, object]] = []
        if params.get("sendInitialEvents") == "true":
            if not self.watch_list:
                return status(422, "Invalid", "sendInitialEvents is forbidden for watch")
            assert params.get("resourceVersionMatch") == "NotOlderThan" and "resourceVersion" not in params
            end = {"resourceVersion": "10", "annotations": {"k8s.io/initial-events-end": "true"}}
            initial = [{"type": "ADDED", "object": o} for o in self.listed]
            initial.append({"type": "BOOKMARK", "object": {"metadata": end}})
        self.watches += 1
        if self.watches == 1:
            lines = [json.dumps(e) for e in initial + self.events]
            return Response(200, content="\n".join(lines).encode())
        if initial:
            return Response(200, content=_then_quiet(initial))
        return Response(200, content=_quiet())


async def _then_quiet(events: list[dict[str, object]]) -> AsyncIterator[bytes]:
    for event in events:
        yield json.dumps(event).encode() + b"\n"
    await asyncio.sleep(3600)


@pytest.mark.parametrize("watch_list", [True, False], ids=["watch-list", "list-then-watch"])
async def test_informer_syncs_follows_the_watch_and_relists_on_gone(watch_list: bool) -> None:
    events = [
        {"type": "ADDED", "object": _spc("b", "11")},
        {"type": "DELETED", "object": _spc("a", "12")},
        {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}},
    ]
    script = Script([_spc("a", "9")], events, watch_list)
    seen: list[tuple[str, str]] = []
    api = MockApi(script).client()
    informer = Informer(api, SPC, namespace="ns")
    informer.add_listener(lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    informer.start()
    await informer.wait_synced(5)
    for _ in range(200):
        if informer.relists >= 2:
            break
        await asyncio.sleep(0.01)
    await informer.stop()
    assert informer.relists >= 2  # the ERROR 410 made it read the state again
    assert ("ADDED", "b") in seen and ("DELETED", "a") in seen
    assert informer.get("ns", "a") == _spc("a", "9")  # read again: the state still holds it
    assert informer.get("ns", "b") is None  # ... and not b, which it no longer holds
    assert api.watch_list is watch_list
    # with WatchList the state comes with the watch: no list request at all
    assert script.lists == (0 if watch_list else 2)


async def test_upsert_local_keeps_the_newer_version() -> None:
    informer = Informer(MockApi(Script([], [], True)).client(), SPC, namespace="ns")
    informer.upsert_local(_spc("a", "5"))
    informer.upsert_local(_spc("a", "4"))
    assert informer.get("ns", "a") == _spc("a", "5")


async def test_the_first_read_in_a_namespace_is_one_request_with_watch_list() -> None:
    script = Script([_spc("a", "9")], [], watch_list=True)
    mock = MockApi(script)
    cache = NamespacedCache(mock.client(), SPC)
    got = await asyncio.wait_for(cache.get("ns", "a"), 5)
    assert got == _spc("a", "9")
    # the watch brought the state: no list, no direct read
    assert mock.sent[0].params.get("sendInitialEvents") == "true"
    assert all(s.params.get("watch") == "true" for s in mock.sent)
    assert script.gets == [] and script.lists == 0
    await cache.stop()


async def test_reads_after_the_sync_come_from_the_cache_and_a_miss_asks_once() -> None:
    script = Script([_spc("a", "9")], [], watch_list=True)
    api = MockApi(script).client()
    cache = NamespacedCache(api, SPC)
    cache.acquire("ns")
    for _ in range(200):
        if cache._informers["ns"].synced:
            break
        await asyncio.sleep(0.01)
    assert (await cache.get("ns", "a"))["metadata"]["name"] == "a"
    assert (await cache.get("ns", "a"))["metadata"]["name"] == "a"
    assert script.gets == []  # both from the cache
    with pytest.raises(ApiError) as err:
        await cache.get("ns", "missing")
    assert err.value.not_found
    assert script.gets == ["missing"]  # a miss may be newer than the watch: asked once
    assert script.lists == 0  # the state came with the watch
    await cache.stop()


async def test_namespaced_cache_stops_an_idle_informer_in_a_referenced_task() -> None:
    cache = NamespacedCache(MockApi(Script([_spc("a", "9")], [], True)).client(), SPC, idle_seconds=0.05)
    assert (await cache.get("ns", "a"))["metadata"]["name"] == "a"
    cache.acquire("ns")
    cache.release("ns")
    assert cache.namespaces == ["ns"]
    for _ in range(100):
        if not cache.namespaces:
            break
        await asyncio.sleep(0.02)
    assert cache.namespaces == []
    await cache.stop()


async def test_cached_objects_leave_managed_fields_out() -> None:
    listed = {"metadata": {**_spc("a", "9")["metadata"], "managedFields": [{"manager": "kubectl"}]}}
    informer = Informer(MockApi(Script([listed], [], True)).client(), SPC, namespace="ns")
    informer.start()
    await informer.wait_synced(5)
    await informer.stop()
    assert informer.get("ns", "a") == _spc("a", "9")
    written = {"metadata": {**_spc("b", "3")["metadata"], "managedFields": [{"manager": "us"}]}}
    informer.upsert_local(written)
    assert informer.get("ns", "b") == _spc("b", "3")
    assert written["metadata"]["managedFields"] == [{"manager": "us"}]  # the caller's object is untouched


async def test_a_warmed_namespace_is_read_from_its_cache_and_stops_when_no_volume_comes() -> None:
    script = Script([_spc("a", "9")], [], watch_list=True)
    cache = NamespacedCache(MockApi(script).client(), SPC, idle_seconds=0.2)
    cache.warm("ns")
    assert cache.namespaces == ["ns"]
    await cache._informers["ns"].wait_synced(5)
    assert (await cache.get("ns", "a"))["metadata"]["name"] == "a"
    assert script.gets == [] and script.lists == 0  # the read used the warmed watch
    for _ in range(100):
        if not cache.namespaces:
            break
        await asyncio.sleep(0.02)
    assert cache.namespaces == []  # no volume acquired it: stopped after the idle delay
    await cache.stop()


async def test_a_transform_shapes_what_is_stored_and_heard_but_not_the_bookmark() -> None:
    script = Script([_spc("a", "9")], [{"type": "ADDED", "object": _spc("b", "11")}], watch_list=True)

    def names_only(obj: dict[str, object]) -> dict[str, object]:
        meta = obj["metadata"]
        assert isinstance(meta, dict)
        return {"metadata": {"name": meta["name"], "namespace": meta["namespace"]}}

    informer = Informer(MockApi(script).client(), SPC, namespace="ns", transform=names_only)
    heard: list[tuple[str, object]] = []
    informer.add_listener(lambda kind, obj: heard.append((kind, obj)))
    informer.start()
    await informer.wait_synced(5)  # the end-of-initial-events bookmark was recognised
    for _ in range(100):
        if informer.get("ns", "b") is not None:
            break
        await asyncio.sleep(0.01)
    await informer.stop()
    assert informer.get("ns", "a") == {"metadata": {"name": "a", "namespace": "ns"}}
    assert heard == [
        ("MODIFIED", {"metadata": {"name": "a", "namespace": "ns"}}),
        ("ADDED", {"metadata": {"name": "b", "namespace": "ns"}}),
    ]
