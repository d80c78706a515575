"""The operator's JSON client: the paged pod list removal relies on."""

from __future__ import annotations

import json

import httpx2
import pytest
from sscsi_operator.kube import POD, ApiError, KubeClient


async def test_list_all_follows_continue_tokens() -> None:
    seen: list[dict[str, str]] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        seen.append(params)
        assert request.url.path == "/api/v1/pods"
        page = params.get("continue", "")
        following = {"": "t1", "t1": "t2", "t2": ""}[page]
        items = [{"metadata": {"name": f"pod{page or '0'}"}}]
        return httpx2.Response(200, json={"items": items, "metadata": {"continue": following}})

    client = KubeClient(httpx2.AsyncClient(transport=httpx2.MockTransport(serve), base_url="https://k8s"))
    pods = await client.list_all(POD, None, field_selector="status.phase!=Failed", page_size=1)
    assert [p["metadata"]["name"] for p in pods] == ["pod0", "podt1", "podt2"]
    assert [s.get("continue") for s in seen] == [None, "t1", "t2"]
    assert all(s["limit"] == "1" and s["fieldSelector"] == "status.phase!=Failed" for s in seen)
    await client.close()


async def test_list_all_raises_the_apiservers_refusal() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        body = {"reason": "Forbidden", "message": 'pods is forbidden: cannot list resource "pods"'}
        return httpx2.Response(403, content=json.dumps(body))

    client = KubeClient(httpx2.AsyncClient(transport=httpx2.MockTransport(refuse), base_url="https://k8s"))
    with pytest.raises(ApiError) as raised:
        await client.list_all(POD)
    assert raised.value.status == 403 and "cannot list" in raised.value.message
    await client.close()
