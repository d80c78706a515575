"""Watch-backed caches: list, then follow the watch; relist when the version expires; idle informers stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx2
from sscsi_kube import Informer, NamespacedCache
from sscsi_kube.resources import SPC

from unit.sscsi_kube.mock_api import MockApi


def _spc(name: str, rv: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


async def _quiet() -> AsyncIterator[bytes]:
    """A watch on which nothing happens (until the informer stops and cancels it)."""
    await asyncio.sleep(3600)
    yield b""


class Script:
    """Lists return `listed`; the first watch streams `events`, later watches hang (as an idle watch does)."""

    def __init__(self, listed: list[dict[str, object]], events: list[dict[str, object]]) -> None:
        self.listed = listed
        self.events = events
        self.watches = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.params.get("watch") != "true":
            return httpx2.Response(200, json={"items": self.listed, "metadata": {"resourceVersion": "10"}})
        self.watches += 1
        if self.watches == 1:
            return httpx2.Response(200, content="\n".join(json.dumps(e) for e in self.events).encode())
        return httpx2.Response(200, content=_quiet())


async def test_informer_lists_follows_the_watch_and_relists_on_gone() -> None:
    events = [
        {"type": "ADDED", "object": _spc("b", "11")},
        {"type": "DELETED", "object": _spc("a", "12")},
        {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}},
    ]
    script = Script([_spc("a", "9")], events)
    seen: list[tuple[str, str]] = []
    informer = Informer(MockApi(script).client(), SPC, namespace="ns")
    informer.add_listener(lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    informer.start()
    await informer.wait_synced(5)
    for _ in range(200):
        if informer.relists >= 2:
            break
        await asyncio.sleep(0.01)
    await informer.stop()
    assert informer.relists >= 2  # the ERROR 410 made it list again
    assert ("ADDED", "b") in seen and ("DELETED", "a") in seen
    assert informer.get("ns", "a") == _spc("a", "9")  # relisted: the list still holds it


async def test_upsert_local_keeps_the_newer_version() -> None:
    informer = Informer(MockApi(Script([], [])).client(), SPC, namespace="ns")
    informer.upsert_local(_spc("a", "5"))
    informer.upsert_local(_spc("a", "4"))
    assert informer.get("ns", "a") == _spc("a", "5")


async def test_namespaced_cache_stops_an_idle_informer_in_a_referenced_task() -> None:
    cache = NamespacedCache(MockApi(Script([_spc("a", "9")], [])).client(), SPC, idle_seconds=0.05)
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
