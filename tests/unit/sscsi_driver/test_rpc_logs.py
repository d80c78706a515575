"""Request logs of the CSI RPCs (`@rpc`): identifiers only, never node-publish secrets or pod tokens.

kubelet calls NodePublishVolume over a real gRPC unix socket; the node service hands the request to a
recording publisher. Every log record of the call, at DEBUG and through both of the driver's log formats,
is searched for the secret values and the token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from sscsi_driver import errors
from sscsi_driver.logs import JsonFormatter, KeyValueFormatter
from sscsi_driver.models import SA_TOKENS
from sscsi_driver.node import NodeService
from sscsi_driver.publisher import PublishRequest
from sscsi_proto import csi_pb2, csi_pb2_grpc

SECRET_VALUE = "s3cr3t-client-secret-9f1c"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.token-body-7d2a.signature-b41e"
TOKENS = json.dumps(
    {"api://AzureADTokenExchange": {"token": TOKEN, "expirationTimestamp": "2030-01-01T00:00:00Z"}}
)
NEVER_LOGGED = (SECRET_VALUE, TOKEN, "token-body-7d2a")
TARGET = "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/secrets/mount"


@dataclass
class RecordingPublisher:
    """Stands in for the Publisher: keeps what the node service passed, fails as told."""

    fail: Exception | None = None
    received: list[PublishRequest] = field(default_factory=list)

    async def publish(self, req: PublishRequest) -> None:
        self.received.append(req)
        if self.fail is not None:
            raise self.fail

    async def unpublish(self, target_path: str) -> None:
        pass


@dataclass
class Node:
    stub: csi_pb2_grpc.NodeStub
    publisher: RecordingPublisher


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    publisher = RecordingPublisher()
    server = grpc.aio.server()
    csi_pb2_grpc.add_NodeServicer_to_server(NodeService("node-a", publisher), server)  # type: ignore[arg-type]
    address = f"unix:{tmp_path / 'csi.sock'}"
    server.add_insecure_port(address)
    await server.start()
    async with grpc.aio.insecure_channel(address) as channel:
        yield Node(csi_pb2_grpc.NodeStub(channel), publisher)
    await server.stop(0)


def publish_request(**overrides: object) -> csi_pb2.NodePublishVolumeRequest:
    request = csi_pb2.NodePublishVolumeRequest(
        volume_id="csi-0123",
        target_path=TARGET,
        readonly=True,
        volume_capability=csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume()),
        volume_context={
            "secretProviderClass": "azure-spc",
            "csi.storage.k8s.io/pod.name": "web-1",
            "csi.storage.k8s.io/pod.namespace": "shop",
            "csi.storage.k8s.io/pod.uid": "uid-1",
            SA_TOKENS: TOKENS,
        },
        secrets={"clientid": "app-id", "clientsecret": SECRET_VALUE},
    )
    for name, value in overrides.items():
        request.ClearField(name) if value is None else setattr(request, name, value)
    return request


def rendered(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as the driver would write it, in both formats, plus its raw attributes."""
    lines = []
    for record in caplog.records:
        lines += [KeyValueFormatter().format(record), JsonFormatter().format(record), repr(vars(record))]
    return "\n".join(lines)


def assert_nothing_secret(caplog: pytest.LogCaptureFixture) -> None:
    text = rendered(caplog)
    for value in NEVER_LOGGED:
        assert value not in text


def summaries(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sscsi_driver.rpc" and r.getMessage() == message]


async def test_publish_logs_identifiers_and_strips_secrets_and_tokens(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await node.stub.NodePublishVolume(publish_request())

    [received] = node.publisher.received  # the publisher does get them: only the logs go without
    assert received.secrets["clientsecret"] == SECRET_VALUE
    assert received.volume_context[SA_TOKENS] == TOKENS
    assert_nothing_secret(caplog)
    for message in ("request", "response"):
        [record] = summaries(caplog, message)
        fields = vars(record)
        assert fields["method"] == "NodePublishVolume"
        assert fields["volume_id"] == "csi-0123"
        assert fields["target_path"] == TARGET
        assert (fields["pod.namespace"], fields["pod.name"]) == ("shop", "web-1")
        assert fields["secretProviderClass"] == "azure-spc"
        assert fields["secrets"] == fields["tokens"] == "***stripped***"
    assert "clientsecret" not in rendered(caplog)  # not even the key names of the secrets


async def test_a_failed_publish_logs_the_error_without_secrets(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    node.publisher.fail = errors.failed("provider said no", errors.GRPC_PROVIDER_ERROR)
    with caplog.at_level(logging.DEBUG), pytest.raises(grpc.aio.AioRpcError) as caught:
        await node.stub.NodePublishVolume(publish_request())

    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert caught.value.details() == "provider said no"
    [record] = summaries(caplog, "rpc failed")
    assert record.levelno == logging.INFO
    assert (vars(record)["code"], vars(record)["error"]) == ("UNKNOWN", "provider said no")
    assert vars(record)["secrets"] == "***stripped***"
    assert_nothing_secret(caplog)


async def test_a_crash_is_internal_and_its_traceback_carries_no_secrets(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    node.publisher.fail = RuntimeError("unexpected state")
    with caplog.at_level(logging.DEBUG), pytest.raises(grpc.aio.AioRpcError) as caught:
        await node.stub.NodePublishVolume(publish_request())

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "NodePublishVolume: internal error, see driver logs"
    [record] = summaries(caplog, "rpc crashed")
    assert record.exc_info is not None
    assert "RuntimeError: unexpected state" in KeyValueFormatter().format(record)
    assert_nothing_secret(caplog)


@pytest.mark.parametrize(
    ("missing", "details"),
    [
        ("volume_capability", "Volume capability missing in request"),
        ("volume_id", "Volume ID missing in request"),
        ("target_path", "Target path missing in request"),
    ],
)
async def test_a_refused_request_is_logged_without_secrets(
    node: Node, caplog: pytest.LogCaptureFixture, missing: str, details: str
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(grpc.aio.AioRpcError) as caught:
        await node.stub.NodePublishVolume(publish_request(**{missing: None}))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == details
    assert node.publisher.received == []
    [record] = summaries(caplog, "rpc failed")
    assert vars(record)["tokens"] == "***stripped***"
    assert_nothing_secret(caplog)


async def test_requests_without_secrets_or_tokens_log_no_markers(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    request = publish_request()
    request.secrets.clear()
    del request.volume_context[SA_TOKENS]
    with caplog.at_level(logging.DEBUG):
        await node.stub.NodePublishVolume(request)

    [record] = summaries(caplog, "request")
    assert "secrets" not in vars(record)
    assert "tokens" not in vars(record)
    assert vars(record)["volume_id"] == "csi-0123"
