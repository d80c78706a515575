"""The publish path in process: real unix-socket provider, real tmpfs, fake Kubernetes.

Includes the property test: whatever a provider answers, nothing is written outside the
target, a failed first mount leaves no tmpfs, and a failed refresh keeps the old files.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sscsi_driver import mounter
from sscsi_driver.errors import DriverError
from sscsi_driver.models import SPC_ATTRIBUTE
from sscsi_driver.publisher import Publisher
from sscsi_proto import provider_pb2

from unit.sscsi_driver.fakes import ScriptedProvider, kubelet_dirs, make_publisher, request, unmount_all

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for tmpfs mounts")


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
    from sscsi_driver.keyed_lock import KeyedLock

    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    publisher, _ = make_publisher(root, sock_dir)
    provider.response = provider_pb2.MountResponse(
        files=[provider_pb2.File(path="a", contents=b"1")],
        object_version=[provider_pb2.ObjectVersion(id="a", version="1")],
    )
    locks: KeyedLock[str] = KeyedLock()

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


def _count(publisher: Publisher, name: str) -> float:
    registry = publisher._metrics.registry
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == f"{name}_total"
    )


def test_first_publish_and_refresh_report_their_own_outcomes(
    tmp_path: Path, provider_socket: tuple[Path, ScriptedProvider]
) -> None:
    """First publish: a provider failure fails the call with upstream's wording, once, and leaves no
    mount; a missing SPC is reported as such. Refresh: counted as a rotation, failures masked."""
    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    publisher, events = make_publisher(root, sock_dir, rotation=True)
    bad = provider_pb2.MountResponse(files=[provider_pb2.File(path="../x", contents=b"x")])
    good = provider_pb2.MountResponse(
        files=[provider_pb2.File(path="a", contents=b"1")],
        object_version=[provider_pb2.ObjectVersion(id="a", version="1")],
    )
    rotated = provider_pb2.MountResponse(
        files=[provider_pb2.File(path="a", contents=b"2")],
        object_version=[provider_pb2.ObjectVersion(id="a", version="2")],
    )
    no_spc = replace(
        request(target), volume_context={**request(target).volume_context, SPC_ATTRIBUTE: "missing"}
    )

    async def run() -> tuple[DriverError, DriverError]:
        provider.response = bad
        with pytest.raises(DriverError) as failed:
            await publisher.publish(request(target))
        with pytest.raises(DriverError) as missing:
            await publisher.publish(no_spc)
        provider.response = good
        await publisher.publish(request(target))
        provider.response = rotated
        await publisher.publish(request(target))
        provider.response = bad
        await publisher.publish(request(target))  # masked
        await publisher._providers.close()
        return failed.value, missing.value

    try:
        failed, missing = asyncio.run(run())
        assert failed.message.startswith("failed to mount secrets store objects for pod ns/p, err: ")
        assert failed.message.count("failed to mount secrets store objects") == 1
        assert missing.message.startswith("failed to get secretproviderclass ns/missing")
        assert (target / "a").read_text() == "2"
        assert _count(publisher, "node_publish") == 2  # first publish + one good refresh
        assert _count(publisher, "node_publish_error") == 3
        assert _count(publisher, "rotation_reconcile") == 1
        assert _count(publisher, "rotation_reconcile_error") == 1
        assert events.events == [("Normal", "MountRotationComplete"), ("Warning", "MountRotationFailed")]
    finally:
        unmount_all(root)
