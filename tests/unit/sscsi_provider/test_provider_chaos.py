"""Reference provider extensions for chaos runs: stamped contents, the hang and garbage faults."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from sscsi_proto import provider_pb2
from sscsi_provider import logs
from sscsi_provider.control import ControlServer
from sscsi_provider.server import (
    GARBAGE_BYTES,
    serialize_mount_response,
)
from sscsi_provider.service import GARBAGE_RESPONSE, MountError, ProviderService
from sscsi_provider.stamp import stamp_digest, stamp_line
from sscsi_provider.state import Fault, ProviderState

from .test_provider import files_of, http_get, invalid, mount_request, objects_param, stub_for, versions_of

NOW = 1_700_000_123.5
STAMP = {"stampPeriodSeconds": "10", "stampSalt": "pepper"}


def expected_line(
    pod: str, name: str, version: int, salt: str = "pepper", namespace: str = "team-a"
) -> bytes:
    """The line as PLAN.md states it, computed here without the provider's helpers."""
    material = f"{salt}/{namespace}/{pod}/{name}/{version}".encode()
    digest = hashlib.sha256(material).hexdigest()[:32]
    return f"{namespace}/{pod}/{name} v{version} {digest}\n".encode()


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
def service(state: ProviderState, clock: list[float]) -> ProviderService:
    return ProviderService(state, clock=lambda: clock[0])


# --------------------------------------------------------------------------- stamping


def test_stamped_files_carry_pod_object_version_and_digest(service: ProviderService) -> None:
    version = int(NOW // 10)
    resp = service.mount(mount_request(extra=STAMP))
    assert files_of(resp) == {
        "foo": (0, expected_line("web", "foo", version)),
        "fookey": (0, expected_line("web", "fookey", version)),
    }
    assert versions_of(resp) == {"secret/foo": f"v{version}", "secret/fookey": f"v{version}"}
    assert stamp_line("pepper", "team-a", "web", "foo", version) == expected_line("web", "foo", version)
    assert len(stamp_digest("pepper", "team-a", "web", "foo", version)) == 32


def test_stamp_version_follows_the_clock_one_version_per_call(
    service: ProviderService, clock: list[float]
) -> None:
    first = service.mount(mount_request(extra=STAMP))
    clock[0] = NOW + 10
    second = service.mount(mount_request(extra=STAMP))
    v1, v2 = int(NOW // 10), int(NOW // 10) + 1
    assert set(versions_of(first).values()) == {f"v{v1}"}
    assert set(versions_of(second).values()) == {f"v{v2}"}
    assert files_of(second)["foo"][1] == expected_line("web", "foo", v2)


def test_stamp_keeps_alias_and_mode_and_ignores_rotation(
    service: ProviderService, state: ProviderState
) -> None:
    objects = objects_param(
        {"objectName": "db", "objectAlias": "conf/db", "objectMode": "0640", "objectContent": "plain"}
    )
    service.mount(mount_request(objects, extra=STAMP))
    state.set_rotation(True)  # the same pod again: stamping wins over the rotated value
    resp = service.mount(mount_request(objects, extra=STAMP))
    assert files_of(resp) == {"conf/db": (0o640, expected_line("web", "db", int(NOW // 10)))}


def test_stamp_salt_and_pod_change_the_digest(service: ProviderService) -> None:
    other_salt = service.mount(mount_request(extra={**STAMP, "stampSalt": "salt2"}))
    no_salt = service.mount(mount_request(extra={"stampPeriodSeconds": "10"}))
    version = int(NOW // 10)
    assert files_of(other_salt)["foo"][1] == expected_line("web", "foo", version, salt="salt2")
    assert files_of(no_salt)["foo"][1] == expected_line("web", "foo", version, salt="")
    assert files_of(other_salt)["foo"] != files_of(no_salt)["foo"]


def test_without_stamp_period_nothing_changes(service: ProviderService) -> None:
    resp = service.mount(mount_request(extra={"stampSalt": "pepper"}))
    assert files_of(resp)["foo"] == (0, b"secret")
    assert versions_of(resp) == {"secret/foo": "v1", "secret/fookey": "v1"}


@pytest.mark.parametrize("period", ["0", "-5", "ten", "1.5", "99999999"])
def test_bad_stamp_period_is_invalid_argument(service: ProviderService, period: str) -> None:
    assert "stampPeriodSeconds" in invalid(
        service, mount_request(extra={**STAMP, "stampPeriodSeconds": period})
    )


def test_stamping_logs_neither_lines_nor_salt(
    service: ProviderService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    resp = service.mount(mount_request(extra={**STAMP, "stampSalt": "SALT-SENTINEL"}))
    digest = files_of(resp)["foo"][1].split()[-1].decode()
    text = "\n".join(
        f.format(r) for r in caplog.records for f in (logs.KeyValueFormatter(), logs.JsonFormatter())
    )
    assert f"secret/foo=v{int(NOW // 10)}" in text and "stamped=True" in text
    assert digest not in text and "SALT-SENTINEL" not in text


# --------------------------------------------------------------------------- hang (in process)


def mount_in_thread(service: ProviderService, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(service.mount(mount_request(), **kwargs))
        except MountError as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def wait_until(what: str, predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_hang_holds_mount_until_mode_changes(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("hang"))
    thread, out = mount_in_thread(service)
    wait_until("the mount to hang", lambda: state.hung_mounts == 1)
    thread.join(0.3)
    assert thread.is_alive() and out == []
    state.set_fault(Fault.build("none"))
    thread.join(5)
    assert not thread.is_alive() and state.hung_mounts == 0
    assert files_of(out[0])["foo"] == (0, b"secret")


def test_hang_then_next_mode_applies(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("hang"))
    thread, out = mount_in_thread(service)
    wait_until("the mount to hang", lambda: state.hung_mounts == 1)
    state.set_fault(Fault.build("unavailable"))
    thread.join(5)
    assert isinstance(out[0], MountError) and out[0].code is grpc.StatusCode.UNAVAILABLE


def test_hang_gives_up_when_caller_leaves(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("hang"))
    leave = threading.Event()
    thread, out = mount_in_thread(service, is_active=lambda: not leave.is_set())
    wait_until("the mount to hang", lambda: state.hung_mounts == 1)
    leave.set()
    thread.join(5)
    assert isinstance(out[0], MountError) and out[0].code is grpc.StatusCode.CANCELLED
    assert state.hung_mounts == 0 and state.snapshot()["pods_seen"] == 0


def test_fault_build_knows_hang_and_garbage() -> None:
    assert Fault.build("hang").mode.value == "hang"
    assert Fault.build("GARBAGE", seconds="3").seconds == 0.0


# --------------------------------------------------------------------------- garbage (in process)


def test_garbage_serves_the_request_but_sends_undecodable_bytes(
    service: ProviderService, state: ProviderState
) -> None:
    state.set_fault(Fault.build("garbage"))
    resp = service.mount(mount_request())
    assert resp is GARBAGE_RESPONSE and state.snapshot()["pods_seen"] == 1
    assert serialize_mount_response(resp) == GARBAGE_BYTES
    with pytest.raises(DecodeError):
        provider_pb2.MountResponse.FromString(GARBAGE_BYTES)
    ordinary = provider_pb2.MountResponse(files=[provider_pb2.File(path="a", contents=b"x")])
    assert provider_pb2.MountResponse.FromString(serialize_mount_response(ordinary)) == ordinary


def test_garbage_still_rejects_bad_requests(service: ProviderService, state: ProviderState) -> None:
    state.set_fault(Fault.build("garbage"))
    assert invalid(service, mount_request(None)) == "objects is not set"


# --------------------------------------------------------------------------- real socket and HTTP


def test_real_socket_hang_blocks_only_mount(live: tuple[ProviderState, Path, ControlServer]) -> None:
    state, sock, control = live
    channel, stub = stub_for(sock)
    with channel:
        assert http_get(control, "/fault?mode=hang") == (200, "fault set to hang\n")
        with pytest.raises(grpc.RpcError) as err:
            stub.Mount(mount_request(), timeout=0.5)
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # The abandoned call lets go of its worker.
        wait_until("the abandoned mount to end", lambda: state.hung_mounts == 0)

        pending = stub.Mount.future(mount_request(), timeout=30)
        wait_until("the mount to hang", lambda: state.hung_mounts == 1)
        assert stub.Version(provider_pb2.VersionRequest(version="v1alpha1"), timeout=5).version == "v1alpha1"
        status, body = http_get(control, "/state")
        assert status == 200 and json.loads(body)["hung_mounts"] == 1
        assert not pending.done()

        assert http_get(control, "/fault?mode=none")[0] == 200
        assert files_of(pending.result(timeout=10))["foo"] == (0, b"secret")


def test_real_socket_garbage_is_undecodable(live: tuple[ProviderState, Path, ControlServer]) -> None:
    state, sock, control = live
    channel, stub = stub_for(sock)
    with channel:
        assert http_get(control, "/fault?mode=garbage")[0] == 200
        with pytest.raises(grpc.RpcError) as err:
            stub.Mount(mount_request(), timeout=5)
        assert err.value.code() is grpc.StatusCode.INTERNAL
        assert stub.Version(provider_pb2.VersionRequest(), timeout=5).runtime_name == "E2EMockProvider"
        assert http_get(control, "/fault?mode=none")[0] == 200
        assert len(stub.Mount(mount_request(), timeout=5).files) == 2
    assert state.mount_calls == 2
