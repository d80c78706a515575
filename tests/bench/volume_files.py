"""What a published volume holds in the bench's kubelet directory, and taking its mounts down."""

from __future__ import annotations

import contextlib
from pathlib import Path

from sscsi_driver import mounter


def _entries(target: Path) -> list[Path]:
    """The volume's files (the atomic writer's `..data` links left out); empty when unreadable."""
    try:
        return sorted(p for p in target.iterdir() if not p.name.startswith(".."))
    except OSError:
        return []


def first_file(target: Path) -> bytes | None:
    """The first file's content (the reference provider writes b"rotated" after a rotation)."""
    names = _entries(target)
    with contextlib.suppress(OSError):
        return names[0].read_bytes() if names else None
    return None


def file_count(target: Path) -> int:
    return len(_entries(target))


def unmount_all(root: Path) -> None:
    """Unmount every tmpfs under `root`, innermost first (teardown after a phase)."""
    if not root.exists():
        return
    for mount in reversed(mounter.mounts_under(root)):
        with contextlib.suppress(OSError):
            mounter.unmount(mount)
