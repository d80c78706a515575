"""fsGroup the CSI way (VOLUME_MOUNT_GROUP): real tmpfs, real ownership, real non-root reads.

The read checks run a child process as uid 1000 (with and without the group as a supplementary
group), so "can the pod read it" is decided by the kernel, not by comparing numbers.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sscsi_driver import atomic_writer, mounter
from sscsi_driver.atomic_writer import Payload, write_payloads
from sscsi_driver.errors import DriverError
from sscsi_driver.node import MAX_GROUP_ID, NodeService, mount_group
from sscsi_driver.publisher import PublishRequest
from sscsi_proto import csi_pb2, provider_pb2

from unit.sscsi_driver.fakes import (
    ScriptedProvider,
    kubelet_dirs,
    make_publisher,
    request,
    unmount_all,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for tmpfs mounts and chown")


GROUP = 2000
USER = 1000


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A tmpfs in a directory any user may traverse (pytest's tmp_path is 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="sscsi-fsgroup-", dir="/tmp"))
    base.chmod(0o755)
    target = base / "mount"
    target.mkdir(mode=0o755)
    mounter.mount_tmpfs(target)
    try:
        yield target
    finally:
        mounter.unmount(target)
        target.rmdir()
        base.rmdir()


def read_as(path: Path, *groups: int) -> int:
    """0 when uid 1000 with these supplementary groups can read `path`, EACCES when refused."""
    done = subprocess.run(
        ["/bin/cat", str(path)],
        user=USER,
        group=USER,
        extra_groups=list(groups),
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        return 0
    assert b"Permission denied" in done.stderr, done.stderr
    return errno.EACCES


def entries(target: Path) -> dict[str, os.stat_result]:
    out = {".": os.lstat(target)}
    for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, target)] = os.lstat(path)
    return out


MODES = {"ro-owner": 0o400, "ro-owner-group": 0o440, "default": 0o644, "owner-rw": 0o600, "zero": 0}


def files(suffix: bytes = b"") -> list[Payload]:
    payloads = [Payload(name, mode, name.encode() + suffix) for name, mode in MODES.items()]
    return [*payloads, Payload("dir/nested", 0o440, b"nested" + suffix)]


def assert_group_owned(target: Path) -> None:
    for rel, info in entries(target).items():
        if stat.S_ISLNK(info.st_mode):
            continue
        assert info.st_gid == GROUP, rel
        assert info.st_uid == 0, rel
    for name, mode in MODES.items():
        info = os.stat(target / name)
        assert stat.S_IMODE(info.st_mode) == mode | 0o040, name  # group-read added, nothing else
    assert stat.S_IMODE(os.stat(target / "dir" / "nested").st_mode) == 0o440


def test_group_owns_root_generation_dirs_and_files_on_publish_and_rotation(tmpfs: Path) -> None:
    assert write_payloads(tmpfs, files(), group=GROUP) is True
    assert_group_owned(tmpfs)
    assert stat.S_IMODE(os.stat(tmpfs).st_mode) == 0o1777  # the tmpfs root mode stays upstream's
    first = os.readlink(tmpfs / "..data")

    assert write_payloads(tmpfs, files(), group=GROUP) is False  # same content and group: untouched
    assert os.readlink(tmpfs / "..data") == first

    assert write_payloads(tmpfs, files(b"-rotated"), group=GROUP) is True
    assert os.readlink(tmpfs / "..data") != first
    assert not (tmpfs / first).exists()
    assert_group_owned(tmpfs)
    assert (tmpfs / "ro-owner-group").read_bytes() == b"ro-owner-group-rotated"


def test_non_root_member_of_the_group_reads_0440_before_and_after_rotation(tmpfs: Path) -> None:
    write_payloads(tmpfs, [Payload("secret", 0o440, b"v1")], group=GROUP)
    assert read_as(tmpfs / "secret", GROUP) == 0
    assert read_as(tmpfs / "secret") == errno.EACCES  # not in the group: refused
    write_payloads(tmpfs, [Payload("secret", 0o440, b"v2")], group=GROUP)
    assert read_as(tmpfs / "secret", GROUP) == 0
    assert read_as(tmpfs / "secret", GROUP + 1) == errno.EACCES


def test_without_a_group_ownership_and_modes_are_upstreams(tmpfs: Path) -> None:
    assert write_payloads(tmpfs, files()) is True
    for rel, info in entries(tmpfs).items():
        assert (info.st_uid, info.st_gid) == (0, 0), rel
    for name, mode in MODES.items():
        assert stat.S_IMODE(os.stat(tmpfs / name).st_mode) == mode, name
    assert read_as(tmpfs / "ro-owner-group", GROUP) == errno.EACCES


def test_a_generation_written_without_the_group_is_rewritten_with_it(tmpfs: Path) -> None:
    write_payloads(tmpfs, files())
    assert write_payloads(tmpfs, files(), group=GROUP) is True
    assert_group_owned(tmpfs)


def test_group_mode_adds_group_read_only() -> None:
    for mode in range(0o1000):
        assert atomic_writer.group_mode(mode) == mode | 0o040


def publish_request(volume_mount_group: str | None) -> csi_pb2.NodePublishVolumeRequest:
    mount = csi_pb2.VolumeCapability.MountVolume()
    if volume_mount_group is not None:
        mount.volume_mount_group = volume_mount_group
    return csi_pb2.NodePublishVolumeRequest(
        volume_id="v", target_path="/t", volume_capability=csi_pb2.VolumeCapability(mount=mount)
    )


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("0", 0), ("2000", 2000)])
def test_mount_group_accepts_kubelets_decimal_fsgroup(raw: str | None, expected: int | None) -> None:
    assert mount_group(publish_request(raw)) == expected
    assert mount_group(publish_request(str(MAX_GROUP_ID))) == MAX_GROUP_ID


@pytest.mark.parametrize(
    "raw", ["abc", "-1", "+5", " 2000", "2000 ", "1e3", "\u0662\u0660", "4294967295", "9" * 40]
)
def test_invalid_mount_group_is_invalid_argument(raw: str) -> None:
    with pytest.raises(DriverError) as caught:
        mount_group(publish_request(raw))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "volume_mount_group" in caught.value.message and "fsGroup" in caught.value.message
    assert len(caught.value.message) < 200


def test_node_advertises_volume_mount_group() -> None:
    service = NodeService("node", publisher=None)  # type: ignore[arg-type]
    context: Any = None
    reply = asyncio.run(service.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), context))
    kinds = {cap.rpc.type for cap in reply.capabilities}
    rpc = csi_pb2.NodeServiceCapability.RPC
    assert kinds == {rpc.STAGE_UNSTAGE_VOLUME, rpc.VOLUME_MOUNT_GROUP}


def test_publisher_applies_the_group_on_first_publish_and_refresh(
    tmp_path: Path, provider_socket: tuple[Path, ScriptedProvider]
) -> None:
    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    publisher, events = make_publisher(root, sock_dir, rotation=True)

    def reply(value: bytes, version: str) -> Any:
        return provider_pb2.MountResponse(
            files=[provider_pb2.File(path="pw", mode=0o440, contents=value)],
            object_version=[provider_pb2.ObjectVersion(id="pw", version=version)],
        )

    def grouped(req: PublishRequest) -> PublishRequest:
        return PublishRequest(
            req.target_path, req.readonly, req.volume_context, req.secrets, mount_group=GROUP
        )

    async def run() -> None:
        provider.response = reply(b"one", "1")
        await publisher.publish(grouped(request(target)))
        assert os.stat(target / "pw").st_gid == GROUP and os.stat(target).st_gid == GROUP
        provider.response = reply(b"two", "2")
        await publisher.publish(grouped(request(target)))
        await publisher._providers.close()

    try:
        asyncio.run(run())
        assert (target / "pw").read_bytes() == b"two"
        info = os.stat(target / "pw")
        assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (GROUP, 0o440)
        assert os.stat(target / os.readlink(target / "..data")).st_gid == GROUP
        assert ("Normal", "MountRotationComplete") in events.events
    finally:
        unmount_all(root)
