"""The publish path in process: real unix-socket provider, real tmpfs, fake Kubernetes.

Includes the property test: whatever a provider answers, nothing is written outside the
target, a failed first mount leaves no tmpfs, and a failed refresh keeps the old files.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sscsi_driver import mounter
from sscsi_driver.config import parse_config
from sscsi_driver.errors import DriverError
from sscsi_driver.metrics import Metrics
from sscsi_driver.models import PodRef
from sscsi_driver.provider_client import ProviderClients
from sscsi_driver.publisher import Publisher, PublishRequest
from sscsi_proto import provider_pb2, provider_pb2_grpc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for tmpfs mounts")


class ScriptedProvider(provider_pb2_grpc.CSIDriverProviderServicer):
    def __init__(self) -> None:
        self.response = provider_pb2.MountResponse()
        self.calls = 0

    def Mount(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return self.response


@dataclass
class FakeSpcs:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        from sscsi_driver.kube.api import ApiError

        try:
            return self.objects[(namespace, name)]
        except KeyError:
            raise ApiError(404, "NotFound", f'secretproviderclasses "{name}" not found') from None

    def acquire(self, namespace: str) -> None:
        pass

    def release(self, namespace: str) -> None:
        pass


@dataclass
class FakeStatuses:
    written: list[dict[str, str]] = field(default_factory=list)

    def current_versions(self, pod: PodRef, spc_name: str) -> dict[str, str]:
        return {}

    async def upsert(self, pod: PodRef, spc_name: str, target: str, versions: Any) -> bool:
        self.written.append(dict(versions))
        return True


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def pod_event(self, pod: PodRef, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


@pytest.fixture(scope="module")
def provider_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ScriptedProvider]]:
    sock_dir = tmp_path_factory.mktemp("providers")
    servicer = ScriptedProvider()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    provider_pb2_grpc.add_CSIDriverProviderServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{sock_dir / 'scripted.sock'}")
    server.start()
    yield sock_dir, servicer
    server.stop(0)


def make_publisher(root: Path, sock_dir: Path, *, rotation: bool = False) -> tuple[Publisher, FakeEvents]:
    cfg, _ = parse_config(
        [f"--kubelet-root-dir={root}", f"--enable-secret-rotation={rotation}", "--rotation-poll-interval=0s"]
    )
    spcs = FakeSpcs(
        {
            ("ns", "spc"): {
                "metadata": {"namespace": "ns", "name": "spc", "generation": 1},
                "spec": {"provider": "scripted", "parameters": {"objects": "x"}},
            }
        }
    )
    events = FakeEvents()
    publisher = Publisher(
        cfg,
        providers=ProviderClients([sock_dir], 4 * 1024 * 1024, 10.0),
        spcs=spcs,  # type: ignore[arg-type]
        statuses=FakeStatuses(),  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        metrics=Metrics(CollectorRegistry()),
    )
    return publisher, events


def request(target: Path) -> PublishRequest:
    return PublishRequest(
        target_path=str(target),
        readonly=True,
        volume_context={
            "secretProviderClass": "spc",
            "csi.storage.k8s.io/pod.name": "p",
            "csi.storage.k8s.io/pod.namespace": "ns",
            "csi.storage.k8s.io/pod.uid": "uid-1",
        },
        secrets={},
    )


def kubelet_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A kubelet root and a volume target under it, laid out as kubelet does (the volume dir exists)."""
    root = tmp_path / "kubelet"
    target = root / "pods" / "uid-1" / "volumes" / "kubernetes.io~csi" / "v" / "mount"
    target.parent.mkdir(parents=True, exist_ok=True)
    return root, target


def unmount_all(root: Path) -> None:
    for mount in reversed(mounter.mounts_under(root)):
        mounter.unmount(mount)


def snapshot(root: Path) -> set[str]:
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            seen.add(os.path.join(dirpath, name))
    return seen


hostile_paths = st.one_of(
    st.sampled_from(
        ["../escape", "/etc/passwd-copy", "a/../../b", "..data", "./a", "a//b", "", ".", "..", "x/.."]
    ),
    st.text(alphabet="ab./", min_size=1, max_size=12),
)
files_strategy = st.lists(
    st.tuples(hostile_paths, st.integers(min_value=-5, max_value=0o1000), st.binary(max_size=64)), max_size=5
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=files_strategy, with_versions=st.booleans())
def test_random_provider_responses_never_escape_the_target(
    tmp_path: Path,
    provider_socket: tuple[Path, ScriptedProvider],
    files: list[tuple[str, int, bytes]],
    with_versions: bool,
) -> None:
    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    (root / "sentinel").write_text("untouched")
    before_outside = snapshot(root) - snapshot(target)
    provider.response = provider_pb2.MountResponse(
        files=[provider_pb2.File(path=p, mode=m, contents=c) for p, m, c in files],
        object_version=[provider_pb2.ObjectVersion(id="o", version="v1")] if with_versions else [],
    )
    publisher, _ = make_publisher(root, sock_dir)

    async def run() -> DriverError | None:
        try:
            await publisher.publish(request(target))
            return None
        except DriverError as err:
            return err
        finally:
            await publisher._providers.close()

    error = asyncio.run(run())
    try:
        after_outside = snapshot(root) - snapshot(target)
        assert after_outside - {str(target)} <= before_outside | {str(target)}
        assert (root / "sentinel").read_text() == "untouched"
        if error is None:
            for path in snapshot(target):
                real = os.path.realpath(path)
                assert real == str(target) or real.startswith(str(target) + os.sep), path
        else:
            assert not mounter.is_mount_point(target), "a failed first mount must not leave a tmpfs"
            assert not target.exists()
    finally:
        unmount_all(root)


def test_failed_refresh_keeps_previous_files(
    tmp_path: Path, provider_socket: tuple[Path, ScriptedProvider]
) -> None:
    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    publisher, events = make_publisher(root, sock_dir, rotation=True)
    ok = provider_pb2.MountResponse(
        files=[
            provider_pb2.File(path="user", mode=0o644, contents=b"u1"),
            provider_pb2.File(path="pw", contents=b"p1"),
        ],
        object_version=[provider_pb2.ObjectVersion(id="user", version="1")],
    )

    async def run() -> None:
        provider.response = ok
        await publisher.publish(request(target))
        provider.response = provider_pb2.MountResponse(
            files=[
                provider_pb2.File(path="user", contents=b"u2"),
                provider_pb2.File(path="../pw", contents=b"x"),
            ],
            object_version=[provider_pb2.ObjectVersion(id="user", version="2")],
        )
        await publisher.publish(request(target))  # refresh fails on the bad path: masked, as upstream
        await publisher._providers.close()

    try:
        asyncio.run(run())
        assert (target / "user").read_text() == "u1" and (target / "pw").read_text() == "p1"
        assert ("Warning", "MountRotationFailed") in events.events
        assert mounter.is_mount_point(target)
    finally:
        unmount_all(root)


def test_concurrent_publish_of_one_target_mounts_once(
    tmp_path: Path, provider_socket: tuple[Path, ScriptedProvider]
) -> None:
    from sscsi_driver.rpc import VolumeLocks

    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    publisher, _ = make_publisher(root, sock_dir)
    provider.response = provider_pb2.MountResponse(
        files=[provider_pb2.File(path="a", contents=b"1")],
        object_version=[provider_pb2.ObjectVersion(id="a", version="1")],
    )
    locks = VolumeLocks()

    async def one() -> None:
        async with locks.hold(str(target)):
            await publisher.publish(request(target))

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(10)))
        await publisher._providers.close()

    try:
        asyncio.run(run())
        assert mounter.mounts_under(target) == [target]
        assert len(locks) == 0
    finally:
        unmount_all(root)
