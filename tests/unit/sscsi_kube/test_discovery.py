"""Resource names as kubectl accepts them, resolved from discovery."""

from __future__ import annotations

import pytest
from sscsi_kube import ApiError, discover

from unit.sscsi_kube.mock_api import MockApi, Request, Response, status

CORE = {
    "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"]},
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod"},
        {
            "name": "events",
            "singularName": "event",
            "namespaced": True,
            "kind": "Event",
            "shortNames": ["ev"],
        },
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node", "shortNames": ["no"]},
    ]
}
GROUPS = {
    "groups": [
        {"name": "events.k8s.io", "preferredVersion": {"version": "v1"}},
        {"name": "operators.coreos.com", "preferredVersion": {"version": "v1alpha1"}},
        {"name": "packages.operators.coreos.com", "preferredVersion": {"version": "v1"}},
    ]
}
DOCS = {
    "/api/v1": CORE,
    "/apis": GROUPS,
    "/apis/events.k8s.io/v1": {"resources": [{"name": "events", "namespaced": True, "kind": "Event"}]},
    "/apis/operators.coreos.com/v1alpha1": {
        "resources": [
            {
                "name": "clusterserviceversions",
                "singularName": "clusterserviceversion",
                "namespaced": True,
                "kind": "ClusterServiceVersion",
                "shortNames": ["csv", "csvs"],
            }
        ]
    },
}


def serve(request: Request) -> Response:
    if request.url.path == "/apis/packages.operators.coreos.com/v1":
        return status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    return Response(200, json=DOCS[request.url.path])


async def test_names_resolve_like_kubectl_and_a_down_aggregated_api_is_skipped() -> None:
    client = MockApi(serve).client()
    found = await discover(client)
    for name in ("pods", "pod", "po", "Pod", "POD"):
        assert found.resolve(name).path("ns") == "/api/v1/namespaces/ns/pods"
    assert found.resolve("events").group == ""  # core wins a bare name
    assert found.resolve("events.events.k8s.io").group == "events.k8s.io"
    csv = found.resolve("csv")
    assert (csv.group, csv.version, csv.plural, csv.namespaced) == (
        "operators.coreos.com",
        "v1alpha1",
        "clusterserviceversions",
        True,
    )
    assert found.resolve("clusterserviceversions.operators.coreos.com") == csv
    assert not found.resolve("node").namespaced
    with pytest.raises(ApiError) as raised:
        found.resolve("pods/log")
    assert raised.value.not_found
    with pytest.raises(ApiError):
        found.resolve("packagemanifest")
    await client.close()


async def test_kinds_served_only_in_a_version_that_is_not_preferred_resolve() -> None:
    """As OLM serves it: operators.coreos.com prefers v2 (OperatorCondition only), Subscription is v1alpha1
    and OperatorGroup is v1 and v1alpha2; the preferred version wins a kind served in several."""
    group = {
        "name": "operators.coreos.com",
        "preferredVersion": {"version": "v2"},
        "versions": [{"version": v} for v in ("v2", "v1", "v1alpha2", "v1alpha1")],
    }

    def kind(plural: str, singular: str, name: str) -> dict[str, object]:
        return {"name": plural, "singularName": singular, "namespaced": True, "kind": name}

    docs = {
        "/api/v1": CORE,
        "/apis": {"groups": [group]},
        "/apis/operators.coreos.com/v2": {
            "resources": [kind("operatorconditions", "operatorcondition", "X")]
        },
        "/apis/operators.coreos.com/v1": {
            "resources": [kind("operatorgroups", "operatorgroup", "OperatorGroup")]
        },
        "/apis/operators.coreos.com/v1alpha2": {
            "resources": [kind("operatorgroups", "operatorgroup", "OperatorGroup")]
        },
        "/apis/operators.coreos.com/v1alpha1": {
            "resources": [kind("subscriptions", "subscription", "Subscription")]
        },
    }
    client = MockApi(lambda request: Response(200, json=docs[request.url.path])).client()
    found = await discover(client)
    assert found.resolve("subscription").version == "v1alpha1"
    assert found.resolve("operatorgroup.operators.coreos.com").version == "v1"
    assert found.resolve("operatorconditions").version == "v2"
    await client.close()
