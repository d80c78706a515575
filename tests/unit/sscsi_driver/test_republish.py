"""kubelet's periodic republish of a volume this process published: when it refetches, when it does not.

Inside --rotation-poll-interval a republish costs no provider call, unless the SecretProviderClass was
edited or the volume's tmpfs is gone (then it is mounted and filled again at once); unpublish takes off
every stacked mount and is idempotent. Real tmpfs, real provider socket, fake Kubernetes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sscsi_driver import mounter
from sscsi_proto import provider_pb2

from unit.sscsi_driver.fakes import ScriptedProvider, kubelet_dirs, make_publisher, request, unmount_all

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for tmpfs mounts")


def answer(contents: bytes, version: str) -> provider_pb2.MountResponse:
    return provider_pb2.MountResponse(
        files=[provider_pb2.File(path="a", mode=0o644, contents=contents)],
        object_version=[provider_pb2.ObjectVersion(id="a", version=version)],
    )


def test_republish_inside_interval_refetches_only_after_spc_edit_or_lost_tmpfs(
    tmp_path: Path, provider_socket: tuple[Path, ScriptedProvider]
) -> None:
    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    publisher, _ = make_publisher(root, sock_dir, rotation=True, interval="1h")
    spc = publisher._spcs.objects[("ns", "spc")]  # type: ignore[attr-defined]

    async def run() -> list[tuple[int, bytes]]:
        seen: list[tuple[int, bytes]] = []
        calls = provider.calls

        async def republish() -> None:
            await publisher.publish(request(target))
            seen.append((provider.calls - calls, (target / "a").read_bytes()))

        provider.response = answer(b"v1", "1")
        await republish()  # first publish
        provider.response = answer(b"v2", "2")
        await republish()  # inside the interval: nothing asked, nothing changed
        spc["metadata"] = {**spc["metadata"], "generation": 2}
        await republish()  # the SPC was edited: refetched at once
        provider.response = answer(b"v3", "3")
        mounter.unmount(target)  # the tmpfs disappeared behind the driver's back
        await republish()  # mounted and filled again at once
        await publisher._providers.close()
        return seen

    try:
        assert asyncio.run(run()) == [(1, b"v1"), (1, b"v1"), (2, b"v2"), (3, b"v3")]
        assert mounter.mounts_under(target) == [target]
    finally:
        unmount_all(root)


def test_unpublish_takes_off_stacked_mounts_and_is_idempotent(
    tmp_path: Path, provider_socket: tuple[Path, ScriptedProvider]
) -> None:
    sock_dir, provider = provider_socket
    root, target = kubelet_dirs(tmp_path)
    publisher, _ = make_publisher(root, sock_dir)
    provider.response = answer(b"v1", "1")

    async def run() -> None:
        await publisher.publish(request(target))
        mounter.mount_tmpfs(target)  # e.g. left by a crash between mount and bookkeeping
        mounter.mount_tmpfs(target)
        await publisher.unpublish(str(target))
        await publisher.unpublish(str(target))
        await publisher._providers.close()

    try:
        asyncio.run(run())
        assert mounter.mounts_under(target.parent) == []
        assert not os.path.lexists(target)
        assert publisher.volumes.get(str(target)) is None
    finally:
        unmount_all(root)
