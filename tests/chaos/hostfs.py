"""What the node's filesystem shows: a pod volume's files as one generation, the driver's tmpfs mounts.

A volume is read the way a careful consumer reads an atomically written directory: resolve `..data`
once, read every file of that generation, and start again when the generation vanished underneath
(the driver swapped in a newer one). So a mix of versions is the driver's doing, never the reader's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sscsi_driver.mounter import parse_mountinfo

KUBELET_PODS = Path("/var/lib/kubelet/pods")
_CSI_MOUNT = re.compile(r"/var/lib/kubelet/pods/([0-9a-f-]+)/volumes/kubernetes\.io~csi/([^/]+)/mount")
READ_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class CsiMount:
    pod_uid: str
    volume: str
    path: str


def target_path(pod_uid: str, volume: str) -> Path:
    return KUBELET_PODS / pod_uid / "volumes" / "kubernetes.io~csi" / volume / "mount"


def csi_tmpfs_mounts(mountinfo: str | None = None) -> list[CsiMount]:
    """Every tmpfs on a kubelet CSI volume's mount directory (the driver's), from mountinfo."""
    text = Path("/proc/self/mountinfo").read_bytes() if mountinfo is None else mountinfo.encode()
    out: list[CsiMount] = []
    for entry in parse_mountinfo(text):
        found = _CSI_MOUNT.fullmatch(str(entry.mount_point))
        if entry.fstype == "tmpfs" and found:
            out.append(CsiMount(found.group(1), found.group(2), str(entry.mount_point)))
    return out


class VolumeUnreadable(Exception):
    """The volume has no readable generation (not mounted, empty, or the reads kept racing)."""


def read_generation(target: Path) -> dict[str, bytes]:
    """{file name: bytes} of the generation `..data` points at, read as one."""
    last: Exception | None = None
    for _ in range(READ_ATTEMPTS):
        try:
            generation = os.readlink(target / "..data")
        except FileNotFoundError as err:
            raise VolumeUnreadable(f"no ..data link in {target}") from err
        except OSError as err:
            raise VolumeUnreadable(f"{target}: {err}") from err
        base = target / generation
        try:
            return {p.name: p.read_bytes() for p in base.iterdir() if not p.name.startswith("..")}
        except FileNotFoundError as err:  # swapped and cleaned up meanwhile: read the new one
            last = err
    raise VolumeUnreadable(f"{target}: generation kept changing while read ({last})")
