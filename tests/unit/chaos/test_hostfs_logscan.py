"""chaos.hostfs reads one generation and finds the driver's tmpfs; chaos.logscan reads only new lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chaos import hostfs, logscan, stamps

MOUNTINFO = (
    "1 0 0:1 / /var/lib/kubelet/pods/ab-12/volumes/kubernetes.io~csi/plain/mount rw - tmpfs tmpfs rw\n"
    "2 0 0:2 / /var/lib/kubelet/pods/ab-12/volumes/kubernetes.io~projected/tok rw - tmpfs tmpfs rw\n"
    "3 0 0:3 / /var/lib/kubelet/pods/cd-34/volumes/kubernetes.io~csi/x/mount rw shared:1 - ext4 /dev/a rw\n"
)


def test_csi_tmpfs_mounts() -> None:
    [mount] = hostfs.csi_tmpfs_mounts(MOUNTINFO)
    assert (mount.pod_uid, mount.volume) == ("ab-12", "plain")


def test_read_generation(tmp_path: Path) -> None:
    gen = tmp_path / "..2026_12_01_00_00_00.abc"
    gen.mkdir()
    (gen / "foo").write_bytes(b"1\n")
    os.symlink(gen.name, tmp_path / "..data")
    os.symlink("..data/foo", tmp_path / "foo")
    assert hostfs.read_generation(tmp_path) == {"foo": b"1\n"}
    with pytest.raises(hostfs.VolumeUnreadable):
        hostfs.read_generation(tmp_path / "absent")


def test_logscan_reads_what_came_after_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logscan, "POD_LOGS", tmp_path / "pods")
    old = stamps.digest("s", "ns", "p", "a", 1)
    new = stamps.digest("s", "ns", "p", "a", 2)
    log = tmp_path / "kubelet.log"
    log.write_text(f"before {old}\n")
    scan = logscan.LogScan(tmp_path)
    scan.mark_start()
    with log.open("a") as f:
        f.write(f"after {new}\npartial")
    scan.scan()
    possible = list(stamps.possible_digests("s", "ns", "p", ["a"], 1, 2))
    assert scan.leaks(possible) == [("ns/p/a v2", new, str(log))]
