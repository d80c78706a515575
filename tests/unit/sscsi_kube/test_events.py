"""One Event body for the driver's pod events and the operator's events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sscsi_kube import WARNING, EventRecorder, event_body, involved_object

from unit.sscsi_kube.mock_api import MockApi, Response


def test_event_about_a_cluster_scoped_object_is_filed_under_default() -> None:
    ccd = {
        "apiVersion": "operator.example/v1",
        "kind": "ClusterCSIDriver",
        "metadata": {"name": "c", "uid": "u"},
    }
    body = event_body(involved_object(ccd), "Warning", "InvalidSpec", "x" * 2000, component="op")
    assert body["metadata"] == {"generateName": "c.", "namespace": "default"}
    assert body["involvedObject"] == {
        "apiVersion": "operator.example/v1",
        "kind": "ClusterCSIDriver",
        "name": "c",
        "uid": "u",
    }
    assert len(body["message"]) == 1024
    assert body["source"] == {"component": "op"} and body["reportingInstance"] == "op"
    assert body["count"] == 1 and body["firstTimestamp"] == body["lastTimestamp"]


def test_event_about_a_namespaced_object_is_filed_in_its_namespace() -> None:
    listed = {"metadata": {"name": "web", "namespace": "apps", "uid": "u2"}}
    ref = involved_object(listed, "apps/v1", "Deployment")
    body = event_body(ref, "Normal", "SecretRotationRestart", "restarted", component="op")
    assert body["metadata"]["namespace"] == "apps"
    assert body["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "apps",
        "uid": "u2",
    }


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str


async def test_recorder_posts_pod_events_without_blocking_and_survives_failures() -> None:
    replies = iter([Response(201, json={}), Response(500, json={"reason": "InternalError"})])
    api = MockApi(lambda request: next(replies))
    recorder = EventRecorder(api.client(), "csi-driver", "node-1")
    recorder.pod_event(Pod("ns", "app", "u"), WARNING, "MountFailed", "no provider")
    recorder.pod_event(Pod("ns", "app", "u"), WARNING, "MountFailed", "again")
    await asyncio.wait_for(recorder.drain(), 5)
    assert [s.path for s in api.sent] == ["/api/v1/namespaces/ns/events"] * 2
    body = api.sent[0].body
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "app",
        "namespace": "ns",
        "uid": "u",
    }
    assert body["source"] == {"component": "csi-driver", "host": "node-1"}
    assert body["reportingInstance"] == "node-1" and body["type"] == "Warning"
