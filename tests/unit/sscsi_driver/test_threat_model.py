"""docs/security.md, in process: names never leave the pod's namespace, planted provider sockets are
refused, tokens reach only the named provider and nothing else, one pod's requests are bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sscsi_driver import errors
from sscsi_driver.atomic_writer import Payload
from sscsi_driver.config import (
    DEFAULT_MAX_CONCURRENT_PUBLISHES,
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_MAX_OBJECTS,
    parse_config,
)
from sscsi_driver.errors import DriverError
from sscsi_driver.keyed_lock import KeyedLock
from sscsi_driver.limits import LimitExceeded, check_reply
from sscsi_driver.metrics import Metrics
from sscsi_driver.models import SA_TOKENS
from sscsi_driver.provider_client import ProviderClients
from sscsi_driver.provider_socket import UntrustedSocket, check_socket
from sscsi_driver.publisher import Publisher, PublishRequest
from sscsi_kube import ApiError
from sscsi_kube.resources import POD, SECRET, SPC
from sscsi_proto import provider_pb2, provider_pb2_grpc

from unit.sscsi_driver.fakes import FakeEvents, FakeSpcs, FakeStatuses, kubelet_dirs, unmount_all

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, tmpfs)")
STRANGER = 4242
TOKEN = "eyJhbGciOiJSUzI1NiJ9.planted-token-payload.signature-7c1d"


# ---- names: another namespace is never addressed ----


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("app", "../../kube-system/secrets/x"),
        ("app", ".."),
        ("app", "a/b"),
        ("app", "x?watch=true"),
        ("app", "%2e%2e"),
        ("../kube-system", "x"),
        ("app", ""),
    ],
)
def test_urls_never_leave_the_namespace(namespace: str, name: str) -> None:
    for res in (SECRET, SPC, POD):
        with pytest.raises(ApiError, match="not a Kubernetes object name") as info:
            res.path(namespace, name)
        assert info.value.status == 400


def test_valid_names_make_plain_urls() -> None:
    assert SECRET.path("app", "db.creds-1") == "/api/v1/namespaces/app/secrets/db.creds-1"
    assert SPC.path("app") == "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/app/secretproviderclasses"


# ---- provider sockets ----


def make_socket(path: Path, mode: int = 0o755, uid: int = 0) -> Path:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    os.chmod(path, mode)
    os.chown(path, uid, -1)
    return path


@needs_root
def test_socket_owned_by_root_or_the_directory_owner_is_used(tmp_path: Path) -> None:
    check_socket(make_socket(tmp_path / "root.sock"))
    own_dir = tmp_path / "nonroot"
    own_dir.mkdir()
    os.chown(own_dir, STRANGER, -1)  # a non-root provider creating its socket in its own directory
    check_socket(make_socket(own_dir / "p.sock", uid=STRANGER))


@needs_root
def test_socket_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    planted = make_socket(tmp_path / "p.sock", uid=STRANGER)
    with pytest.raises(UntrustedSocket) as info:
        check_socket(planted)
    message = str(info.value)
    assert f"owned by uid {STRANGER}, not root, the owner of {tmp_path} (uid 0)" in message
    assert "--provider-socket-allowed-uids" in message
    check_socket(planted, {STRANGER})  # an operator allows that provider's uid explicitly


@needs_root
@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_writable_socket_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(UntrustedSocket, match="group- or other-writable"):
        check_socket(make_socket(tmp_path / "p.sock", mode=mode))


@needs_root
def test_symlinks_and_plain_files_are_refused(tmp_path: Path) -> None:
    real = make_socket(tmp_path / "real.sock")
    link = tmp_path / "link.sock"
    link.symlink_to(real)
    check_socket(link)  # root's own symlink to a good socket
    os.lchown(link, STRANGER, -1)
    with pytest.raises(UntrustedSocket, match=f"symlink owned by uid {STRANGER}"):
        check_socket(link)
    (tmp_path / "file.sock").write_text("")
    with pytest.raises(UntrustedSocket, match="not a unix socket"):
        check_socket(tmp_path / "file.sock")


@needs_root
def test_provider_lookup_fails_clearly_on_a_planted_socket(tmp_path: Path) -> None:
    make_socket(tmp_path / "vault.sock", uid=STRANGER)
    clients = ProviderClients([tmp_path], 4 << 20, 10.0)
    with pytest.raises(DriverError) as info:
        clients.socket_path("vault")
    assert info.value.message.startswith('error connecting to provider "vault": provider socket')
    assert "refused: owned by uid 4242" in info.value.message
    allowed = ProviderClients([tmp_path], 4 << 20, 10.0, allowed_uids=frozenset({STRANGER}))
    assert allowed.socket_path("vault") == tmp_path / "vault.sock"


# ---- bounds ----


def test_bound_flags_default_to_what_upstream_admits() -> None:
    cfg, _ = parse_config([])
    assert cfg.max_file_size == DEFAULT_MAX_FILE_SIZE == cfg.max_call_recv_msg_size
    # every distinct file entry costs >= 5 bytes of the 4 MiB reply: fewer than 1 Mi fit
    assert cfg.max_objects_per_volume == DEFAULT_MAX_OBJECTS > cfg.max_call_recv_msg_size // 5
    assert cfg.max_concurrent_publishes_per_pod == DEFAULT_MAX_CONCURRENT_PUBLISHES
    assert cfg.provider_socket_allowed_uids == frozenset()
    cfg, _ = parse_config(
        [
            "--max-objects-per-volume=10",
            "--max-file-size=1024",
            "--max-concurrent-publishes-per-pod=1",
            "--provider-socket-allowed-uids=1000,1001",
        ]
    )
    assert (cfg.max_objects_per_volume, cfg.max_file_size, cfg.max_concurrent_publishes_per_pod) == (
        10,
        1024,
        1,
    )
    assert cfg.provider_socket_allowed_uids == {1000, 1001}
    for bad in ("--max-file-size=0", "--max-objects-per-volume=x", "--provider-socket-allowed-uids=a"):
        with pytest.raises(SystemExit):
            parse_config([bad])


def test_replies_beyond_the_bounds_are_refused() -> None:
    files = [Payload(f"f{i}", 0o644, b"x" * i) for i in range(4)]
    check_reply(files, max_files=4, max_file_size=3)
    with pytest.raises(LimitExceeded, match=r"returned 4 files, more than --max-objects-per-volume=3"):
        check_reply(files, max_files=3, max_file_size=3)
    with pytest.raises(LimitExceeded, match=r"3 bytes for 'f3', more than --max-file-size=2"):
        check_reply(files, max_files=4, max_file_size=2)


async def test_keyed_slots_bound_concurrency_per_key() -> None:
    slots: KeyedLock[str] = KeyedLock(2)
    running: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}

    async def work(key: str) -> None:
        async with slots.hold(key):
            running[key] += 1
            peak[key] = max(peak[key], running[key])
            await asyncio.sleep(0.01)
            running[key] -= 1

    await asyncio.gather(*(work(k) for k in "aaaaaabbb"))
    assert peak == {"a": 2, "b": 2}
    assert len(slots) == 0


# ---- the publish path: a real provider over a unix socket, real tmpfs ----


class RecordingProvider(provider_pb2_grpc.CSIDriverProviderServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.response = provider_pb2.MountResponse(
            files=[provider_pb2.File(path="foo", mode=0o644, contents=b"value")],
            object_version=[provider_pb2.ObjectVersion(id="foo", version="v1")],
        )
        self.error_detail = ""
        self.delay = 0.0
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def Mount(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.requests.append(request)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay)
            if self.error_detail:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, self.error_detail)
            return self.response
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def providers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[str, RecordingProvider]]]:
    sock_dir = tmp_path_factory.mktemp("providers")
    servers, servicers = [], {}
    for name in ("named", "other"):
        servicer = RecordingProvider()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        provider_pb2_grpc.add_CSIDriverProviderServicer_to_server(servicer, server)
        server.add_insecure_port(f"unix:{sock_dir / (name + '.sock')}")
        server.start()
        servers.append(server)
        servicers[name] = servicer
    yield sock_dir, servicers
    for server in servers:
        server.stop(0)


def make_publisher(
    root: Path, sock_dir: Path, *flags: str, registry: CollectorRegistry | None = None
) -> tuple[Publisher, FakeEvents, FakeStatuses, FakeSpcs]:
    cfg, _ = parse_config([f"--kubelet-root-dir={root}", *flags])
    spc = {"spec": {"provider": "named", "parameters": {"objects": "x"}}}
    spcs = FakeSpcs(
        {
            ("ns", "spc"): {"metadata": {"namespace": "ns", "name": "spc", "generation": 1}, **spc},
            ("other", "theirs"): {"metadata": {"namespace": "other", "name": "theirs"}, **spc},
        }
    )
    events, statuses = FakeEvents(), FakeStatuses()
    publisher = Publisher(
        cfg,
        providers=ProviderClients([sock_dir], 4 << 20, 10.0),
        spcs=spcs,  # type: ignore[arg-type]
        statuses=statuses,  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        metrics=Metrics(registry or CollectorRegistry()),
    )
    return publisher, events, statuses, spcs


def request(target: Path, spc: str = "spc", uid: str = "uid-1", **context: str) -> PublishRequest:
    return PublishRequest(
        target_path=str(target),
        readonly=True,
        volume_context={
            "secretProviderClass": spc,
            "csi.storage.k8s.io/pod.name": "p",
            "csi.storage.k8s.io/pod.namespace": "ns",
            "csi.storage.k8s.io/pod.uid": uid,
            **context,
        },
        secrets={},
    )


@needs_root
async def test_spc_of_another_namespace_is_never_used(
    tmp_path: Path, providers: tuple[Path, dict[str, RecordingProvider]]
) -> None:
    sock_dir, servicers = providers
    root, target = kubelet_dirs(tmp_path)
    publisher, _, statuses, _ = make_publisher(root, sock_dir)
    try:
        for name, message in [
            ("theirs", "failed to get secretproviderclass ns/theirs"),
            ("../../other/secretproviderclasses/theirs", "is not a valid object name"),
        ]:
            with pytest.raises(DriverError, match=message):
                await publisher.publish(request(target, spc=name))
        assert servicers["named"].requests == []
        assert statuses.written == []
    finally:
        await publisher._providers.close()
        unmount_all(root)


@needs_root
async def test_tokens_go_to_the_named_provider_only_and_nowhere_else(
    tmp_path: Path,
    providers: tuple[Path, dict[str, RecordingProvider]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sock_dir, servicers = providers
    root, target = kubelet_dirs(tmp_path)
    registry = CollectorRegistry()
    publisher, events, statuses, _ = make_publisher(root, sock_dir, registry=registry)
    tokens = json.dumps({"vault": {"token": TOKEN, "expirationTimestamp": "2030-01-01T00:00:00Z"}})
    try:
        await publisher.publish(request(target, **{SA_TOKENS: tokens}))
        [sent] = servicers["named"].requests
        assert json.loads(sent.attributes)[SA_TOKENS] == tokens
        assert servicers["other"].requests == []

        # a provider echoing the token in its error: the error the pod's events show is scrubbed
        servicers["named"].error_detail = f"permission denied for token {TOKEN}"
        failed_target = target.parent.parent / "w" / "mount"
        failed_target.parent.mkdir(parents=True)
        with pytest.raises(DriverError) as info:
            await publisher.publish(request(failed_target, **{SA_TOKENS: tokens}))
        assert "permission denied for token ***" in info.value.message
    finally:
        servicers["named"].error_detail = ""
        await publisher._providers.close()
        unmount_all(root)
    everywhere = [
        caplog.text,
        info.value.message,
        repr(events.events),
        json.dumps(statuses.written),
        generate_latest(registry).decode(),
    ]
    assert all(TOKEN not in text for text in everywhere)


def test_token_redaction_handles_odd_input() -> None:
    err = errors.failed(f"x {TOKEN} y", errors.GRPC_PROVIDER_ERROR)
    assert errors.redacted(err, [TOKEN]).message == "x *** y"
    assert errors.redacted(err, ["short"]).message == err.message


@needs_root
@pytest.mark.parametrize(
    ("flag", "files", "message"),
    [
        (
            "--max-objects-per-volume=2",
            {"a": b"1", "b": b"2", "c": b"3"},
            "more than --max-objects-per-volume=2",
        ),
        ("--max-file-size=4", {"a": b"12345"}, "more than --max-file-size=4"),
    ],
)
async def test_replies_beyond_the_flags_fail_the_mount_cleanly(
    tmp_path: Path,
    providers: tuple[Path, dict[str, RecordingProvider]],
    flag: str,
    files: dict[str, bytes],
    message: str,
) -> None:
    sock_dir, servicers = providers
    root, target = kubelet_dirs(tmp_path)
    servicers["named"].response = provider_pb2.MountResponse(
        files=[provider_pb2.File(path=p, mode=0o644, contents=c) for p, c in files.items()],
        object_version=[provider_pb2.ObjectVersion(id="o", version="v1")],
    )
    publisher, _, _, _ = make_publisher(root, sock_dir, flag)
    try:
        with pytest.raises(DriverError, match=message) as info:
            await publisher.publish(request(target))
        assert info.value.error_type == errors.FILE_WRITE_ERROR
        assert not target.exists()  # no tmpfs, no directory left behind
    finally:
        await publisher._providers.close()
        unmount_all(root)


@needs_root
async def test_one_pod_publishes_at_most_n_volumes_at_once(
    tmp_path: Path, providers: tuple[Path, dict[str, RecordingProvider]]
) -> None:
    sock_dir, servicers = providers
    servicers["named"].delay = 0.2
    root, _ = kubelet_dirs(tmp_path)
    publisher, _, _, _ = make_publisher(root, sock_dir, "--max-concurrent-publishes-per-pod=2")

    def target_of(uid: str, volume: str) -> Path:
        path = root / "pods" / uid / "volumes" / "kubernetes.io~csi" / volume / "mount"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    try:
        greedy = [request(target_of("uid-1", f"v{i}"), uid="uid-1") for i in range(6)]
        await asyncio.gather(*(publisher.publish(r) for r in greedy))
        assert servicers["named"].peak == 2  # all six mounted, two at a time
        servicers["named"].peak = 0
        others = [request(target_of(f"uid-{i}", "v"), uid=f"uid-{i}") for i in range(2, 6)]
        await asyncio.gather(*(publisher.publish(r) for r in others))
        assert servicers["named"].peak == 4  # other pods are not held back by the bound
        assert len(publisher._pod_slots) == 0
    finally:
        servicers["named"].delay = 0.0
        await publisher._providers.close()
        unmount_all(root)
