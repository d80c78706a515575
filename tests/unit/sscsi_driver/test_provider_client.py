"""The provider client against a real gRPC provider on a unix socket: what it sends, what it makes of replies.

The provider side is a plain servicer in a thread (as a provider plugin is another process); every
error the client raises is the DriverError kubelet would see, with upstream's message shapes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from sscsi_driver import errors
from sscsi_driver.atomic_writer import Payload
from sscsi_driver.errors import DriverError
from sscsi_driver.provider_client import FILE_PERMISSION, ProviderClients
from sscsi_proto import provider_pb2, provider_pb2_grpc

MAX_RECV = 64 * 1024


@dataclass
class Provider(provider_pb2_grpc.CSIDriverProviderServicer):
    """Records each request and answers what the test set; `abort`/`delay` make it fail or dawdle."""

    response: provider_pb2.MountResponse = field(default_factory=provider_pb2.MountResponse)
    abort: tuple[grpc.StatusCode, str] | None = None
    delay: float = 0.0
    requests: list[provider_pb2.MountRequest] = field(default_factory=list)

    def Mount(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        if self.abort is not None:
            context.abort(*self.abort)
        return self.response

    def Version(self, request: Any, context: Any) -> Any:
        return provider_pb2.VersionResponse(
            version="v1alpha1", runtime_name="scripted", runtime_version="0.0.1"
        )


@dataclass
class Running:
    directory: Path
    provider: Provider
    server: grpc.Server


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    provider = Provider()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    provider_pb2_grpc.add_CSIDriverProviderServicer_to_server(provider, server)
    server.add_insecure_port(f"unix:{tmp_path / 'scripted.sock'}")
    server.start()
    yield Running(tmp_path, provider, server)
    server.stop(0)


@pytest.fixture
async def clients(running: Running) -> AsyncIterator[ProviderClients]:
    made = ProviderClients([running.directory], MAX_RECV, 10.0)
    yield made
    await made.close()


def answer(*files: tuple[str, bytes], versions: dict[str, str] | None = None) -> provider_pb2.MountResponse:
    found = versions if versions is not None else {path: "v1" for path, _ in files}
    return provider_pb2.MountResponse(
        files=[provider_pb2.File(path=path, mode=0o644, contents=data) for path, data in files],
        object_version=[provider_pb2.ObjectVersion(id=k, version=v) for k, v in found.items()],
    )


async def mount(clients: ProviderClients, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "attributes": {"objects": "x", "csi.storage.k8s.io/pod.name": "web-1"},
        "secrets": {},
        "target_path": "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount",
        "current_versions": {},
    }
    args.update(kw)
    return await clients.mount("scripted", **args)


async def test_mount_sends_upstreams_request_and_returns_files_and_versions(
    running: Running, clients: ProviderClients
) -> None:
    running.provider.response = answer(
        ("a.txt", b"alpha"), ("dir/b", b"\x00beta"), versions={"a": "3", "b": "7"}
    )
    result = await mount(
        clients,
        secrets={"nodePublishSecretRef": "creds"},
        current_versions={"b": "6", "a": "2"},
    )

    assert result.files == (Payload("a.txt", 0o644, b"alpha"), Payload("dir/b", 0o644, b"\x00beta"))
    assert result.versions == {"a": "3", "b": "7"}
    [sent] = running.provider.requests
    assert json.loads(sent.attributes) == {"objects": "x", "csi.storage.k8s.io/pod.name": "web-1"}
    assert json.loads(sent.secrets) == {"nodePublishSecretRef": "creds"}
    assert sent.target_path == "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount"
    assert sent.permission == FILE_PERMISSION == "420"  # 0644 as upstream's json.Marshal writes it
    assert [(v.id, v.version) for v in sent.current_object_version] == [("a", "2"), ("b", "6")]


async def test_no_secrets_are_sent_as_json_null(running: Running, clients: ProviderClients) -> None:
    running.provider.response = answer(("a", b"x"))
    await mount(clients, secrets={})
    assert running.provider.requests[0].secrets == "null"  # what upstream's json.Marshal(nil map) sends


async def test_provider_error_code_is_the_error_type(running: Running, clients: ProviderClients) -> None:
    running.provider.response = provider_pb2.MountResponse(error=provider_pb2.Error(code="AccessDenied"))
    with pytest.raises(DriverError) as caught:
        await mount(clients)
    assert caught.value.message == "mount request failed with provider error code AccessDenied"
    assert caught.value.error_type == "AccessDenied"
    assert caught.value.code == grpc.StatusCode.UNKNOWN


async def test_a_reply_without_object_versions_is_refused(running: Running, clients: ProviderClients) -> None:
    running.provider.response = answer(("a", b"x"), versions={})
    with pytest.raises(DriverError) as caught:
        await mount(clients)
    assert caught.value.message == 'provider "scripted" returned no object versions'
    assert caught.value.error_type == errors.GRPC_PROVIDER_ERROR


async def test_grpc_errors_read_as_upstreams(running: Running, clients: ProviderClients) -> None:
    running.provider.abort = (grpc.StatusCode.INVALID_ARGUMENT, "objects: unknown key")
    with pytest.raises(DriverError) as caught:
        await mount(clients)
    assert caught.value.message == "rpc error: code = InvalidArgument desc = objects: unknown key"
    assert caught.value.error_type == errors.GRPC_PROVIDER_ERROR
    assert len(running.provider.requests) == 1  # only UNAVAILABLE is retried


async def test_a_slow_provider_hits_the_deadline(running: Running, clients: ProviderClients) -> None:
    running.provider.delay = 1.0
    running.provider.response = answer(("a", b"x"))
    started = time.monotonic()
    with pytest.raises(DriverError) as caught:
        await mount(clients, timeout=0.2)
    assert time.monotonic() - started < 0.9
    assert caught.value.message.startswith("rpc error: code = DeadlineExceeded desc = ")
    assert caught.value.error_type == errors.GRPC_PROVIDER_ERROR


async def test_a_reply_above_the_receive_limit_names_the_flag(
    running: Running, clients: ProviderClients
) -> None:
    running.provider.response = answer(("big", b"z" * (MAX_RECV + 1)))
    with pytest.raises(DriverError) as caught:
        await mount(clients)
    assert caught.value.message.startswith("rpc error: code = ResourceExhausted desc = ")
    assert f"exceeds --max-call-recv-msg-size={MAX_RECV} bytes" in caught.value.message


async def test_unknown_and_invalid_provider_names_fail_the_lookup(
    running: Running, clients: ProviderClients
) -> None:
    with pytest.raises(DriverError) as missing:
        await clients.mount("absent", attributes={}, secrets={}, target_path="/t", current_versions={})
    assert missing.value.message.startswith('error connecting to provider "absent": provider not found')
    assert f"no absent.sock in {running.directory}" in missing.value.message
    assert missing.value.error_type == errors.PROVIDER_LOOKUP_FAILED

    for name in ("../scripted", "a/b", "x" * 31):
        with pytest.raises(DriverError) as invalid:
            clients.socket_path(name)
        assert invalid.value.message == f'invalid provider: provider "{name}"'
    assert running.provider.requests == []


async def test_one_channel_serves_every_call(running: Running, clients: ProviderClients) -> None:
    running.provider.response = answer(("a", b"x"))
    for _ in range(3):
        await mount(clients)
    assert len(running.provider.requests) == 3
    assert list(await clients.health_check()) == [str(running.directory / "scripted.sock")]


async def test_health_check_reports_each_used_provider(running: Running, clients: ProviderClients) -> None:
    assert await clients.health_check() == {}  # nothing used yet: nothing to check
    running.provider.response = answer(("a", b"x"))
    await mount(clients)
    socket = str(running.directory / "scripted.sock")
    assert await clients.health_check() == {socket: True}

    running.server.stop(0).wait()
    assert await clients.health_check() == {socket: False}  # waits for the socket up to its 5 s deadline
