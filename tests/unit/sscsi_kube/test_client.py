"""The one client: paths, verbs and bodies sent, every failure one ApiError."""

from __future__ import annotations

import json

import pytest
from sscsi_kube import ApiError, Resource
from sscsi_kube.resources import CLUSTER_ROLE, POD, SECRET, SPCPS

from unit.sscsi_kube.mock_api import MockApi, Request, Response, status


async def test_list_all_follows_continue_tokens() -> None:
    def serve(request: Request) -> Response:
        page = dict(request.url.params).get("continue", "")
        following = {"": "t1", "t1": "t2", "t2": ""}[page]
        items = [{"metadata": {"name": f"pod{page or '0'}"}}]
        meta = {"continue": following, "resourceVersion": "77"}
        return Response(200, json={"items": items, "metadata": meta})

    api = MockApi(serve)
    client = api.client()
    listing = await client.list_all(POD, None, fields="status.phase!=Failed", page_size=1)
    assert [p["metadata"]["name"] for p in listing.items] == ["pod0", "podt1", "podt2"]
    assert all(p["apiVersion"] == "v1" and p["kind"] == "Pod" for p in listing.items)
    assert listing.resource_version == "77"
    assert [s.path for s in api.sent] == ["/api/v1/pods"] * 3
    assert [s.params.get("continue") for s in api.sent] == [None, "t1", "t2"]
    assert all(
        s.params["limit"] == "1" and s.params["fieldSelector"] == "status.phase!=Failed" for s in api.sent
    )
    await client.close()


async def test_list_all_raises_the_apiservers_refusal() -> None:
    def refuse(request: Request) -> Response:
        body = {"reason": "Forbidden", "message": 'pods is forbidden: cannot list resource "pods"'}
        return Response(403, content=json.dumps(body))

    client = MockApi(refuse).client()
    with pytest.raises(ApiError) as raised:
        await client.list_all(POD)
    assert raised.value.status == 403 and "cannot list" in raised.value.message
    assert str(raised.value).endswith("(403 Forbidden)")
    await client.close()


async def test_get_raises_not_found_and_find_returns_none() -> None:
    api = MockApi(lambda request: status(404, "NotFound", 'secrets "s" not found'))
    client = api.client()
    with pytest.raises(ApiError) as raised:
        await client.get(SECRET, "s", "ns")
    assert raised.value.not_found
    assert await client.find(SECRET, "s", "ns") is None
    assert [s.path for s in api.sent] == ["/api/v1/namespaces/ns/secrets/s"] * 2
    await client.close()


async def test_a_name_that_is_not_one_url_segment_is_refused_before_sending() -> None:
    api = MockApi(lambda request: Response(200, json={}))
    client = api.client()
    for bad in ("../../kube-system/secrets/x", "a/b", "", "x..y"):
        with pytest.raises(ApiError) as raised:
            await client.get(SECRET, bad, "ns")
        assert raised.value.status == 400
    with pytest.raises(ApiError):
        await client.get(SECRET, "s", "../other")
    assert api.sent == []
    await client.close()


def test_paths_for_core_group_cluster_scope_and_subresources() -> None:
    assert POD.path("ns") == "/api/v1/namespaces/ns/pods"
    assert POD.path() == "/api/v1/pods"
    assert (
        CLUSTER_ROLE.path("ignored", "system:x") == "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x"
    )
    assert SPCPS.path("ns", "p", "status") == (
        "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/ns/secretproviderclasspodstatuses/p/status"
    )
    assert SPCPS.api_version == "secrets-store.csi.x-k8s.io/v1" and POD.api_version == "v1"


async def test_writes_send_their_verbs_bodies_and_content_types() -> None:
    api = MockApi(lambda request: Response(200, json={"metadata": {"name": "s"}}))
    client = api.client()
    obj = {"metadata": {"name": "s", "namespace": "ns"}, "data": {}}
    await client.create(SECRET, obj, "ns")
    await client.replace(SECRET, obj, "ns")
    await client.replace_status(SPCPS, obj, "ns")
    await client.merge_patch(SECRET, "s", {"data": None}, "ns")
    await client.merge_patch(SPCPS, "p", {"status": {}}, "ns", sub="status")
    assert [(s.method, s.path.split("/")[-2:], s.content_type) for s in api.sent] == [
        ("POST", ["ns", "secrets"], "application/json"),
        ("PUT", ["secrets", "s"], "application/json"),
        ("PUT", ["s", "status"], "application/json"),
        ("PATCH", ["secrets", "s"], "application/merge-patch+json"),
        ("PATCH", ["p", "status"], "application/merge-patch+json"),
    ]
    assert api.sent[0].body == obj and api.sent[3].body == {"data": None}
    await client.close()


async def test_server_side_apply_reports_whether_it_created() -> None:
    codes = iter([201, 200])
    api = MockApi(lambda request: Response(next(codes), json={"metadata": {"name": "r"}}))
    client = api.client()
    manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "r"},
    }
    first = await client.apply(CLUSTER_ROLE, manifest, field_manager="me")
    again = await client.apply(CLUSTER_ROLE, manifest, field_manager="me")
    assert first.created and not again.created
    sent = api.sent[0]
    assert sent.method == "PATCH" and sent.content_type == "application/apply-patch+yaml"
    assert sent.params == {"fieldManager": "me", "force": "true"}
    assert sent.body == manifest
    await client.close()


async def test_delete_with_preconditions_propagation_and_missing_ok() -> None:
    replies = iter([Response(200, json={"kind": "Status"}), status(404, "NotFound", "gone")])
    api = MockApi(lambda request: next(replies))
    client = api.client()
    assert await client.delete(SECRET, "s", "ns", preconditions={"uid": "u1", "resourceVersion": "5"})
    assert api.sent[0].body == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": "u1", "resourceVersion": "5"},
    }
    assert not await client.delete(SECRET, "s", "ns", propagation="Background", missing_ok=True)
    assert api.sent[1].body["propagationPolicy"] == "Background"
    await client.close()


async def test_discovery_answers_whether_a_resource_and_a_group_are_served() -> None:
    def serve(request: Request) -> Response:
        if request.url.path == "/apis":
            return Response(200, json={"groups": [{"name": "apps"}, {"name": "security.openshift.io"}]})
        if request.url.path == "/apis/monitoring.coreos.com/v1":
            return status(404, "NotFound", "the server could not find the requested resource")
        return Response(200, json={"resources": [{"name": "daemonsets"}]})

    client = MockApi(serve).client()
    assert await client.serves(Resource("apps", "v1", "daemonsets", "DaemonSet"))
    assert not await client.serves(Resource("apps", "v1", "widgets", "Widget"))
    assert not await client.serves(
        Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
    )
    assert await client.serves_group("security.openshift.io")
    assert not await client.serves_group("route.openshift.io")
    await client.close()


async def test_watch_yields_events_skips_blank_lines_and_raises_an_error_event() -> None:
    lines = [
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "2"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "3"}}},
        {
            "type": "ERROR",
            "object": {"code": 410, "reason": "Expired", "message": "too old resource version"},
        },
    ]
    content = "\n\n".join(json.dumps(line) for line in lines).encode()
    api = MockApi(lambda request: Response(200, content=content))
    client = api.client()
    seen: list[str] = []
    with pytest.raises(ApiError) as raised:
        async for kind, _obj in client.watch(POD, "ns", "1", labels={"app": "x"}):
            seen.append(kind)
    assert seen == ["ADDED", "BOOKMARK"] and raised.value.gone
    params = api.sent[0].params
    assert params["watch"] == "true" and params["resourceVersion"] == "1"
    assert params["labelSelector"] == "app=x" and params["allowWatchBookmarks"] == "true"
    await client.close()


async def test_watch_refused_raises_the_status() -> None:
    client = MockApi(lambda request: status(403, "Forbidden", "cannot watch")).client()
    with pytest.raises(ApiError) as raised:
        async for _event in client.watch(POD, None, "0"):
            pass
    assert raised.value.status == 403
    await client.close()
