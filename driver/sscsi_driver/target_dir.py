"""The kubelet target directory of a volume: where it may be, its creation, its mount point, its removal.

Kubelet creates `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>` and leaves the last element,
`mount`, to the driver; the driver mounts its tmpfs there and removes the directory on unpublish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from pathlib import Path

from . import errors, mounter
from .atomic_writer import DATA_LINK

log = logging.getLogger(__name__)


class KubeletPods:
    """Checks that a target path lies in kubelet's pods directory, with links resolved."""

    def __init__(self, kubelet_root_dir: str | Path) -> None:
        self._root = kubelet_root_dir
        self._resolved: str | None = None

    def pods_dir(self) -> str:
        """`<root>/pods/`, links resolved once the root exists (kubelet's root does not move)."""
        if self._resolved is None:
            root = os.path.realpath(self._root)
            if not os.path.isdir(root):
                return os.path.join(root, "pods") + os.sep  # not there yet: resolve again next time
            self._resolved = os.path.join(root, "pods") + os.sep
        return self._resolved

    def check(self, target: str) -> None:
        if os.path.normpath(target) != target or not os.path.isabs(target):
            raise errors.invalid_argument(f"target path {target!r} must be an absolute, clean path")
        pods_dir = self.pods_dir()
        parent = os.path.realpath(os.path.dirname(target))
        if not (parent + os.sep).startswith(pods_dir):
            raise errors.invalid_argument(
                f"target path {target} is outside the kubelet pods directory {pods_dir} "
                f"(set --kubelet-root-dir if kubelet uses another root)"
            )


def create(target: Path) -> bool:
    """Create the mount point when nothing is at `target` yet (the usual first publish: one mkdir, no
    mount table read); False when something is there or the parent is missing (`ensure_mount_point`)."""
    try:
        os.mkdir(target, 0o750)
    except (FileExistsError, FileNotFoundError):
        return False
    except OSError as err:
        raise errors.internal(
            f"failed to create target path {target}, err: {err}", errors.FAILED_TO_ENSURE_MOUNT_POINT
        ) from err
    return True


def ensure_mount_point(target: Path) -> bool:
    """True when our tmpfs is already mounted there; creates the directory otherwise."""
    try:
        if mounter.is_mount_point(target):
            try:
                os.listdir(target)
                return True
            except OSError:
                log.warning("corrupt mount point, unmounting", extra={"target_path": str(target)})
                mounter.unmount(target)
                return False
        target.mkdir(mode=0o750, parents=True, exist_ok=True)
        return False
    except OSError as err:
        raise errors.internal(
            f"failed to check if target path {target} is mount point, err: {err}",
            errors.FAILED_TO_ENSURE_MOUNT_POINT,
        ) from err


def filled(target: str) -> bool:
    """True when `target` holds our `..data` link: our tmpfs is still mounted there and was filled."""
    try:
        return stat.S_ISLNK(os.lstat(os.path.join(target, DATA_LINK)).st_mode)
    except OSError:  # gone, or a broken mount: the full publish path looks closer
        return False


def cleanup_failed_mount(target: Path) -> None:
    try:
        mounter.unmount(target)
        remove_contents(target)
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()
    except OSError as err:
        log.warning(
            "cleanup after failed mount incomplete", extra={"target_path": str(target), "error": str(err)}
        )


def unmount_and_remove(target: Path) -> None:
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise OSError(f"{target} is not a directory; refusing to touch it")
    for _ in range(8):  # stacked mounts (e.g. after a crash) come off one at a time
        if not mounter.unmount(target):
            break
    remove_contents(target)
    target.rmdir()


def remove_contents(directory: Path) -> None:
    """Delete what is inside `directory` without following any symlink out of it."""
    if not directory.is_dir() or directory.is_symlink():
        return
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
