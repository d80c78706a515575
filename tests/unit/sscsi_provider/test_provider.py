"""Reference (e2e) provider: servicer logic in-process, then a real socket, HTTP control and the binary."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from sscsi_proto import provider_pb2, provider_pb2_grpc
from sscsi_provider import logs
from sscsi_provider.control import ControlServer, parse_http_addr
from sscsi_provider.objects import (
    MOCK_PUBLIC_KEY,
    ObjectsError,
    generated_contents,
    parse_mode,
    parse_objects,
)
from sscsi_provider.server import (
    EndpointError,
    prepare_socket_path,
    socket_path_from_endpoint,
    start_grpc_server,
    stop_grpc_server,
)
from sscsi_provider.service import MountError, ProviderService
from sscsi_provider.state import DEFAULT_ERROR_CODE, Fault, ProviderState

POD_UID = "csi.storage.k8s.io/pod.uid"
POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NS = "csi.storage.k8s.io/pod.namespace"
TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"

UPSTREAM_OBJECTS = (
    "array:\n  - |\n    objectName: foo\n    objectVersion: v1\n  - |\n    objectName: fookey\n"
)


def objects_param(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump({"array": [yaml.safe_dump(o, sort_keys=False) for o in objects]})


def mount_request(
    objects: str | None = UPSTREAM_OBJECTS,
    *,
    pod_uid: str = "uid-1",
    extra: dict[str, str] | None = None,
    secrets: str = "null",
    permission: str = "420",
    target_path: str = "/var/lib/kubelet/pods/uid-1/volumes/x/mount",
) -> provider_pb2.MountRequest:
    attributes = {POD_UID: pod_uid, POD_NAME: "web", POD_NS: "team-a"}
    if objects is not None:
        attributes["objects"] = objects
    attributes.update(extra or {})
    return provider_pb2.MountRequest(
        attributes=json.dumps(attributes), secrets=secrets, target_path=target_path, permission=permission
    )


def files_of(response: provider_pb2.MountResponse) -> dict[str, tuple[int, bytes]]:
    return {f.path: (f.mode, f.contents) for f in response.files}


def versions_of(response: provider_pb2.MountResponse) -> dict[str, str]:
    return {v.id: v.version for v in response.object_version}


def invalid(service: ProviderService, request: provider_pb2.MountRequest) -> str:
    with pytest.raises(MountError) as err:
        service.mount(request)
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    return err.value.message


@pytest.fixture
def service(state: ProviderState) -> ProviderService:
    return ProviderService(state)


# --------------------------------------------------------------------------- Version / basic Mount


def test_version(service: ProviderService) -> None:
    resp = service.version(provider_pb2.VersionRequest(version="v1alpha1"))
    assert (resp.version, resp.runtime_name, resp.runtime_version) == (
        "v1alpha1",
        "E2EMockProvider",
        "v0.0.10",
    )


def test_mount_upstream_objects(service: ProviderService) -> None:
    resp = service.mount(mount_request())
    assert files_of(resp) == {"foo": (0, b"secret"), "fookey": (0, MOCK_PUBLIC_KEY)}
    assert [f.path for f in resp.files] == ["foo", "fookey"]
    assert versions_of(resp) == {"secret/foo": "v1", "secret/fookey": "v1"}
    assert not resp.HasField("error")
    assert MOCK_PUBLIC_KEY == b"-----BEGIN PUBLIC KEY-----\nThis is mock key\n-----END PUBLIC KEY-----\n"


def test_unknown_object_has_empty_contents(service: ProviderService) -> None:
    resp = service.mount(mount_request(objects_param({"objectName": "nothing-here"})))
    assert files_of(resp) == {"nothing-here": (0, b"")}
    assert versions_of(resp) == {"secret/nothing-here": "v1"}


def test_secrets_json_object_accepted(service: ProviderService) -> None:
    resp = service.mount(mount_request(secrets='{"username": "u", "password": "p"}'))
    assert len(resp.files) == 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"secrets": "{not json"}, "failed to unmarshal secrets"),
        ({"secrets": "[1, 2]"}, "failed to unmarshal secrets"),
        ({"permission": "rw"}, "failed to unmarshal file permission"),
        ({"permission": '"420"'}, "failed to unmarshal file permission"),
        ({"permission": ""}, "failed to unmarshal file permission"),
        ({"target_path": ""}, "target_path is not set"),
    ],
)
def test_bad_request_fields(service: ProviderService, kwargs: dict[str, str], needle: str) -> None:
    assert needle in invalid(service, mount_request(**kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("attributes", ["not json", "[]", '{"objects": 5}'])
def test_bad_attributes(service: ProviderService, attributes: str) -> None:
    req = provider_pb2.MountRequest(attributes=attributes, secrets="null", target_path="/t", permission="420")
    assert "failed to unmarshal attributes" in invalid(service, req)


@pytest.mark.parametrize(
    ("objects", "needle"),
    [
        (None, "objects is not set"),
        ("", "objects is not set"),
        ("array: [unclosed", "not valid YAML"),
        ("- just a list", "mapping with the key 'array'"),
        ("other: []", "mapping with the key 'array'"),
        ("array: notalist", "objects.array must be a list"),
        ("array:\n  - objectName: foo\n", "item 0: expected a YAML string"),
        ("array:\n  - |\n    objectVersion: v1\n", "item 0: objectName is required"),
        ("array:\n  - |\n    objectName: ''\n", "item 0: objectName is required"),
        ("array:\n  - 'just text'\n", "item 0: expected a mapping"),
        ("array:\n  - 'objectName: [x'\n", "item 0: invalid YAML"),
    ],
)
def test_bad_objects(service: ProviderService, objects: str | None, needle: str) -> None:
    assert needle in invalid(service, mount_request(objects))


def test_empty_array_mounts_nothing(service: ProviderService) -> None:
    resp = service.mount(mount_request("array: []\n"))
    assert list(resp.files) == [] and list(resp.object_version) == []


def test_unknown_object_keys_are_ignored(service: ProviderService) -> None:
    resp = service.mount(mount_request(objects_param({"objectName": "foo", "objectType": "secret"})))
    assert files_of(resp) == {"foo": (0, b"secret")}


def test_mount_via_grpc_adapter_aborts_with_status(service: ProviderService) -> None:
    class Aborted(Exception):
        pass

    class FakeContext:
        def __init__(self) -> None:
            self.status: tuple[grpc.StatusCode, str] | None = None

        def is_active(self) -> bool:
            return True

        def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.status = (code, details)
            raise Aborted

    ctx = FakeContext()
    assert service.Mount(mount_request(), ctx).files[0].contents == b"secret"  # type: ignore[arg-type]
    with pytest.raises(Aborted):
        service.Mount(mount_request(None), ctx)  # type: ignore[arg-type]
    assert ctx.status == (grpc.StatusCode.INVALID_ARGUMENT, "objects is not set")


# --------------------------------------------------------------------------- rotation


def test_rotation_needs_flag_and_a_pod_seen_before(service: ProviderService, state: ProviderState) -> None:
    state.set_rotation(True)
    # first mount of this pod: not rotated yet, but the pod is now recorded
    first = service.mount(mount_request(pod_uid="pod-a"))
    assert files_of(first)["foo"] == (0, b"secret")
    assert versions_of(first)["secret/foo"] == "v1"

    again = service.mount(mount_request(pod_uid="pod-a"))
    assert files_of(again) == {"foo": (0, b"rotated"), "fookey": (0, b"rotated")}
    assert versions_of(again) == {"secret/foo": "v2", "secret/fookey": "v2"}

    other = service.mount(mount_request(pod_uid="pod-b"))
    assert versions_of(other)["secret/foo"] == "v1"

    state.set_rotation(False)
    off = service.mount(mount_request(pod_uid="pod-a"))
    assert files_of(off)["foo"] == (0, b"secret")
    assert versions_of(off)["secret/foo"] == "v1"


def test_rotation_off_pod_seen_is_not_rotated(service: ProviderService) -> None:
    service.mount(mount_request(pod_uid="p"))
    assert versions_of(service.mount(mount_request(pod_uid="p")))["secret/foo"] == "v1"


def test_failed_mount_does_not_record_pod(service: ProviderService, state: ProviderState) -> None:
    state.set_rotation(True)
    invalid(service, mount_request(None, pod_uid="p"))
    assert state.pod_seen("p") is False
    assert versions_of(service.mount(mount_request(pod_uid="p")))["secret/foo"] == "v1"


def test_rotation_overrides_extension_contents_and_versions(
    service: ProviderService, state: ProviderState
) -> None:
    objects = objects_param(
        {"objectName": "db", "objectAlias": "db.txt", "objectContent": "x", "objectVersion": "7"}
    )
    service.mount(mount_request(objects, pod_uid="p"))
    state.set_rotation(True)
    resp = service.mount(mount_request(objects, pod_uid="p"))
    assert files_of(resp) == {"db.txt": (0, b"rotated")}
    assert versions_of(resp) == {"secret/db": "v2"}


# --------------------------------------------------------------------------- token validation


def tokens(*audiences: str) -> str:
    return json.dumps(
        {
            a: {"token": f"tok-{a}-SECRETVALUE", "expirationTimestamp": "2030-01-01T00:00:00Z"}
            for a in audiences
        }
    )


def test_tokens_not_required_by_default(service: ProviderService) -> None:
    assert len(service.mount(mount_request()).files) == 2


def test_tokens_required_and_present(service: ProviderService, state: ProviderState) -> None:
    state.set_required_audiences(["aud1", "aud2"])
    resp = service.mount(mount_request(extra={TOKENS: tokens("aud1", "aud2", "extra")}))
    assert len(resp.files) == 2


def test_tokens_missing_attribute(service: ProviderService, state: ProviderState) -> None:
    state.set_required_audiences(["aud1"])
    message = invalid(service, mount_request())
    assert TOKENS in message and "aud1" in message


def test_tokens_missing_one_audience(service: ProviderService, state: ProviderState) -> None:
    state.set_required_audiences(["aud1", "aud2"])
    message = invalid(service, mount_request(extra={TOKENS: tokens("aud1")}))
    assert "'aud2'" in message and "'aud1'" not in message


def test_tokens_empty_token_rejected(service: ProviderService, state: ProviderState) -> None:
    state.set_required_audiences(["aud1"])
    bad = json.dumps({"aud1": {"token": "", "expirationTimestamp": "x"}})
    assert "'aud1'" in invalid(service, mount_request(extra={TOKENS: bad}))


def test_tokens_bad_json_does_not_echo(service: ProviderService, state: ProviderState) -> None:
    state.set_required_audiences(["aud1"])
    message = invalid(service, mount_request(extra={TOKENS: "{SECRETVALUE"}))
    assert "not valid JSON" in message and "SECRETVALUE" not in message


def test_clearing_audiences(service: ProviderService, state: ProviderState) -> None:
    state.set_required_audiences(["aud1"])
    state.set_required_audiences([])
    assert len(service.mount(mount_request()).files) == 2


# --------------------------------------------------------------------------- extensions


def test_object_alias_content_version_mode(service: ProviderService) -> None:
    objects = objects_param(
        {"objectName": "db", "objectAlias": "conf/db.txt", "objectContent": "hello", "objectVersion": "42"},
        {"objectName": "foo", "objectMode": "0600"},
        {"objectName": "m", "objectMode": 420},
    )
    resp = service.mount(mount_request(objects))
    assert files_of(resp) == {"conf/db.txt": (0, b"hello"), "foo": (0o600, b"secret"), "m": (0o644, b"")}
    assert versions_of(resp) == {"secret/db": "42", "secret/foo": "v1", "secret/m": "v1"}


def test_object_mode_yaml_octal_literal(service: ProviderService) -> None:
    resp = service.mount(mount_request("array:\n  - |\n    objectName: k\n    objectMode: 0640\n"))
    assert resp.files[0].mode == 0o640


def test_object_size_is_deterministic(service: ProviderService) -> None:
    objects = objects_param({"objectName": "big", "objectSize": 1000})
    first = service.mount(mount_request(objects)).files[0].contents
    second = service.mount(mount_request(objects)).files[0].contents
    assert len(first) == 1000 and first == second
    assert first.startswith(b"big\nbig\n")
    assert generated_contents("ab", 5) == b"ab\nab" and generated_contents("ab", 0) == b""


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ({"objectName": "a", "objectSize": -1}, "objectSize must be between"),
        ({"objectName": "a", "objectSize": "lots"}, "objectSize must be an integer"),
        ({"objectName": "a", "objectSize": True}, "objectSize must be an integer"),
        ({"objectName": "a", "objectSize": 3, "objectContent": "x"}, "mutually exclusive"),
        ({"objectName": "a", "objectMode": "0999"}, "objectMode"),
        ({"objectName": "a", "objectMode": 0o1777}, "objectMode"),
        ({"objectName": "a", "objectAlias": ""}, "objectAlias must not be empty"),
        ({"objectName": "a", "objectContent": ["x"]}, "objectContent must be a string"),
    ],
)
def test_bad_extension_values(service: ProviderService, item: dict[str, Any], needle: str) -> None:
    message = invalid(service, mount_request(objects_param(item)))
    assert needle in message and "'a'" in message


def test_parse_mode() -> None:
    assert parse_mode(420) == 0o644
    assert parse_mode("0644") == 0o644
    assert parse_mode("0o755") == 0o755
    assert parse_mode("600") == 0o600
    for bad in (True, "", "8", -1, 1.5):
        with pytest.raises(ValueError):
            parse_mode(bad)


def test_parse_objects_spec_fields() -> None:
    [spec] = parse_objects(objects_param({"objectName": "n", "objectVersion": 3, "objectAlias": "p"}))
    assert (spec.name, spec.version, spec.path, spec.version_id) == ("n", "3", "p", "secret/n")
    with pytest.raises(ObjectsError, match="objects is not set"):
        parse_objects(None)


# --------------------------------------------------------------------------- fault injection


def test_fault_error_code(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("error-code", code="VaultDenied"))
    resp = service.mount(mount_request())
    assert resp.error.code == "VaultDenied"
    assert list(resp.files) == [] and list(resp.object_version) == []
    state.set_fault(Fault.build("error-code"))
    assert service.mount(mount_request()).error.code == DEFAULT_ERROR_CODE


def test_fault_unavailable(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("unavailable"))
    with pytest.raises(MountError) as err:
        service.mount(mount_request())
    assert err.value.code is grpc.StatusCode.UNAVAILABLE


def test_fault_slow(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("slow", seconds="0.3"))
    start = time.monotonic()
    resp = service.mount(mount_request())
    assert time.monotonic() - start >= 0.3
    assert files_of(resp)["foo"] == (0, b"secret")


def test_fault_slow_gives_up_when_caller_leaves(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("slow", seconds="30"))
    start = time.monotonic()
    with pytest.raises(MountError) as err:
        service.mount(mount_request(), is_active=lambda: time.monotonic() - start < 0.2)
    assert err.value.code is grpc.StatusCode.CANCELLED
    assert time.monotonic() - start < 5


def test_fault_no_versions(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("no-versions"))
    resp = service.mount(mount_request())
    assert set(files_of(resp)) == {"foo", "fookey"} and list(resp.object_version) == []


def test_fault_bad_path(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("bad-path"))
    resp = service.mount(mount_request())
    assert [f.path for f in resp.files] == ["foo", "fookey", "../escape"]
    assert versions_of(resp) == {"secret/foo": "v1", "secret/fookey": "v1"}


def test_fault_reset_to_none(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("unavailable"))
    state.set_fault(Fault.build("none"))
    assert len(service.mount(mount_request()).files) == 2


@pytest.mark.parametrize(
    ("mode", "kwargs", "needle"),
    [
        ("explode", {}, "unknown fault mode"),
        ("slow", {}, "needs seconds > 0"),
        ("slow", {"seconds": "abc"}, "must be a number"),
        ("slow", {"seconds": "-1"}, "between 0"),
        ("slow", {"seconds": "nan"}, "between 0"),
        ("slow", {"seconds": "99999"}, "between 0"),
    ],
)
def test_fault_build_rejects(mode: str, kwargs: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Fault.build(mode, **kwargs)  # type: ignore[arg-type]


def test_mount_calls_counted(service: ProviderService, state: ProviderState) -> None:
    service.mount(mount_request())
    invalid(service, mount_request(None))
    snap = state.snapshot()
    assert snap["mount_calls"] == 2 and snap["pods_seen"] == 1
    assert snap["fault"] == {"mode": "none", "code": "", "seconds": 0.0}


# --------------------------------------------------------------------------- logging hygiene


def test_logs_never_contain_secret_material(
    service: ProviderService, state: ProviderState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state.set_required_audiences(["aud1"])
    objects = objects_param({"objectName": "db", "objectContent": "CONTENT-SENTINEL"}, {"objectName": "foo"})
    secrets = json.dumps({"password": "NODE-SECRET-SENTINEL"})
    service.mount(mount_request(objects, secrets=secrets, extra={TOKENS: tokens("aud1")}))
    invalid(service, mount_request(objects, secrets=secrets, extra={TOKENS: "{SECRETVALUE"}))

    rendered = [f.format(r) for r in caplog.records for f in (logs.KeyValueFormatter(), logs.JsonFormatter())]
    text = "\n".join(rendered)
    assert "objects=db,foo" in text and "pod_namespace=team-a" in text and "pod_name=web" in text
    assert "secret/db=v1" in text
    for sentinel in ("CONTENT-SENTINEL", "NODE-SECRET-SENTINEL", "SECRETVALUE", "b'secret'"):
        assert sentinel not in text
    json_lines = [json.loads(line) for line in rendered if line.startswith("{")]
    assert any(doc.get("objects") == ["db", "foo"] for doc in json_lines)


# --------------------------------------------------------------------------- endpoints and addresses


def test_socket_path_from_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert socket_path_from_endpoint("unix:///tmp/a/p.sock") == Path("/tmp/a/p.sock")
    assert socket_path_from_endpoint("/tmp/a/p.sock") == Path("/tmp/a/p.sock")
    monkeypatch.chdir(tmp_path)
    assert socket_path_from_endpoint("rel.sock") == tmp_path / "rel.sock"
    assert socket_path_from_endpoint("unix:rel.sock") == tmp_path / "rel.sock"
    for bad in ("tcp://127.0.0.1:80", "unix://", ""):
        with pytest.raises(EndpointError):
            socket_path_from_endpoint(bad)


def test_prepare_socket_path(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "p.sock"
    prepare_socket_path(nested)
    assert nested.parent.is_dir()

    stale = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stale))
    sock.close()
    assert stale.exists()
    prepare_socket_path(stale)
    assert not stale.exists()

    regular = tmp_path / "file.sock"
    regular.write_text("keep me")
    with pytest.raises(EndpointError, match="not a socket"):
        prepare_socket_path(regular)
    assert regular.read_text() == "keep me"


def test_parse_http_addr() -> None:
    assert parse_http_addr(":8080") == ("", 8080)
    assert parse_http_addr("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_http_addr("[::1]:9000") == ("::1", 9000)
    for bad in ("8080", "host:port", "h:70000", "::1:80"):
        with pytest.raises(ValueError):
            parse_http_addr(bad)


# --------------------------------------------------------------------------- real socket and HTTP


def stub_for(sock: Path, authority: str | None = "localhost") -> tuple[grpc.Channel, Any]:
    options = [("grpc.default_authority", authority)] if authority is not None else []
    channel = grpc.insecure_channel(f"unix://{sock}", options=options)
    return channel, provider_pb2_grpc.CSIDriverProviderStub(channel)


def http_get(control: ControlServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{control.port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_real_socket_localhost_authority(live: tuple[ProviderState, Path, ControlServer]) -> None:
    state, sock, _ = live
    channel, stub = stub_for(sock)
    with channel:
        version = stub.Version(provider_pb2.VersionRequest(version="v1alpha1"), timeout=5)
        assert version.runtime_name == "E2EMockProvider"
        resp = stub.Mount(mount_request(), timeout=5)
        assert files_of(resp) == {"foo": (0, b"secret"), "fookey": (0, MOCK_PUBLIC_KEY)}
        with pytest.raises(grpc.RpcError) as err:
            stub.Mount(mount_request(None), timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "objects is not set"
    assert state.mount_calls == 2


@pytest.mark.parametrize("authority", ["evil.example", "localhost:80", None])
def test_real_socket_rejects_other_authority(
    live: tuple[ProviderState, Path, ControlServer], authority: str | None
) -> None:
    # None: grpc-python's own default authority for unix targets (the encoded socket path).
    state, sock, _ = live
    channel, stub = stub_for(sock, authority)
    with channel:
        for call, request in (
            (stub.Version, provider_pb2.VersionRequest()),
            (stub.Mount, mount_request()),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=5)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert state.mount_calls == 0


def test_real_socket_faults(live: tuple[ProviderState, Path, ControlServer]) -> None:
    _, sock, control = live
    channel, stub = stub_for(sock)
    with channel:
        assert http_get(control, "/fault?mode=unavailable")[0] == 200
        with pytest.raises(grpc.RpcError) as err:
            stub.Mount(mount_request(), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE

        assert http_get(control, "/fault?mode=slow&seconds=20")[0] == 200
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.Mount(mount_request(), timeout=0.3)
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 5

        assert http_get(control, "/fault?mode=error-code&code=VaultDenied")[0] == 200
        assert stub.Mount(mount_request(), timeout=5).error.code == "VaultDenied"

        assert http_get(control, "/fault?mode=none")[0] == 200
        assert len(stub.Mount(mount_request(), timeout=5).files) == 2


def test_http_control_rotation_end_to_end(live: tuple[ProviderState, Path, ControlServer]) -> None:
    state, sock, control = live
    channel, stub = stub_for(sock)
    with channel:
        assert versions_of(stub.Mount(mount_request(pod_uid="p1"), timeout=5))["secret/foo"] == "v1"

        assert http_get(control, "/rotation?rotated=true") == (200, "rotation set to true\n")
        assert state.rotation is True
        rotated = stub.Mount(mount_request(pod_uid="p1"), timeout=5)
        assert files_of(rotated)["foo"] == (0, b"rotated")
        assert versions_of(rotated)["secret/foo"] == "v2"

        assert http_get(control, "/rotation?rotated=false")[0] == 200
        assert files_of(stub.Mount(mount_request(pod_uid="p1"), timeout=5))["foo"] == (0, b"secret")

    for bad in ("/rotation?rotated=yes", "/rotation"):
        assert http_get(control, bad)[0] == 400
    assert state.rotation is False


def test_http_control_other_endpoints(live: tuple[ProviderState, Path, ControlServer]) -> None:
    state, sock, control = live
    assert http_get(control, "/healthz") == (200, "ok\n")
    assert http_get(control, "/nope")[0] == 404

    status, body = http_get(control, "/validate-token-requests?audience=a,%20b,,c")
    assert status == 200 and "a,b,c" in body
    assert state.required_audiences == ("a", "b", "c")
    channel, stub = stub_for(sock)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.Mount(mount_request(extra={TOKENS: tokens("a", "c")}), timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "'b'" in (err.value.details() or "")
        assert http_get(control, "/validate-token-requests?audience=")[0] == 200
        assert state.required_audiences == ()
        assert len(stub.Mount(mount_request(), timeout=5).files) == 2

    assert http_get(control, "/fault?mode=explode")[0] == 400
    assert http_get(control, "/fault?mode=slow")[0] == 400
    assert http_get(control, "/fault?mode=slow&seconds=1.5")[0] == 200

    status, body = http_get(control, "/state")
    assert status == 200
    assert json.loads(body) == {
        "rotation": False,
        "required_audiences": [],
        "fault": {"mode": "slow", "code": "", "seconds": 1.5},
        "mount_calls": 2,
        "hung_mounts": 0,
        "pods_seen": 1,
    }


def test_stop_removes_socket(tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    server = start_grpc_server(ProviderService(ProviderState()), sock)
    assert sock.exists()
    stop_grpc_server(server, sock, grace=0.1)
    assert not sock.exists()


# --------------------------------------------------------------------------- the binary


def test_binary_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "e2e-provider.sock"
    sock.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # a leftover socket file from a previous run

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sscsi_provider.main",
            f"--endpoint=unix://{sock}",
            "--http-addr=127.0.0.1:0",
            "--log-format-json",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        early = [json.loads(proc.stderr.readline()) for _ in range(2)]
        assert [d["msg"] for d in early] == ["removing stale socket", "provider started"], early
        started = early[1]
        port = started["http_port"]
        assert port > 0 and sock.exists()

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.read() == b"ok\n"
        channel, stub = stub_for(sock)
        with channel:
            assert stub.Version(provider_pb2.VersionRequest(), timeout=5).version == "v1alpha1"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        rest = [json.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]
        assert [d["msg"] for d in rest][-1] == "stopped"
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
