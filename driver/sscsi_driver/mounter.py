"""tmpfs mounts for the node plugin, and read-only views of the mount table.

Each Secrets Store CSI volume is a tmpfs mounted on the kubelet target path, so
secret material lives only in memory and disappears with the unmount.

Mounting and unmounting call mount(2)/umount2(2) from libc through ctypes: no
subprocess, no dependency on util-linux in the image, and the real errno. The
mount table is read from ``/proc/self/mountinfo`` (see proc(5)): field 5 is the
mount point with space, tab, newline and backslash written as octal escapes
(``\\040`` and so on), and the filesystem type follows the `` - `` separator.

Linux only; the node plugin needs CAP_SYS_ADMIN in the host mount namespace
(a privileged container with ``/var/lib/kubelet`` mounted ``Bidirectional``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MOUNTINFO",
    "MountError",
    "MountInfo",
    "is_mount_point",
    "is_tmpfs",
    "mount_tmpfs",
    "mounts_under",
    "parse_mountinfo",
    "unmount",
]

#: Where the mount table is read from; a module attribute so tests can swap it.
MOUNTINFO = Path("/proc/self/mountinfo")

# From <sys/mount.h>.
#
# MS_NOSUID and MS_NODEV are the only flags used. A secrets volume holds data
# files written by the driver, never set-uid programs or device nodes, so
# honouring either would only widen what a compromised provider could plant in a
# pod. They do not affect reading the files. Upstream mounts with no options at
# all; kubelet mounts its own Secret volumes (also tmpfs) without these flags
# too, but no workload can depend on set-uid bits or device nodes in a secrets
# volume, so they are safe to add. MS_NOEXEC is deliberately NOT used: upstream
# allows exec, and some providers deliver scripts or binaries (for example
# credential helpers) that workloads run straight from the mount.
# MS_RDONLY is not used either: the driver writes the contents after mounting,
# and kubelet makes the container's bind mount read-only when the pod asks.
MS_NOSUID = 0x2
MS_NODEV = 0x4
TMPFS_FLAGS = MS_NOSUID | MS_NODEV

# tmpfs size= accepts a byte count with an optional k/m/g/t/p/e suffix, or a
# percentage of RAM. Anything else (commas above all) is refused so that the
# value cannot smuggle in further mount options.
_SIZE_RE = re.compile(r"[0-9]+[kKmMgGtTpPeE%]?")
_ESCAPE_RE = re.compile(rb"\\([0-7]{3})")

_HINTS: dict[int, str] = {
    errno.EPERM: "the node plugin needs CAP_SYS_ADMIN: run its container privileged",
    errno.EACCES: "the node plugin needs CAP_SYS_ADMIN: run its container privileged",
    errno.ENOENT: "the mount point does not exist: create the directory first",
    errno.ENOTDIR: "the mount point is not a directory",
    errno.EBUSY: "the mount point is busy: a process still uses files or its cwd below it",
    errno.ENODEV: "the kernel does not support tmpfs",
    errno.EINVAL: "the kernel rejected the mount options",
    errno.ENOMEM: "the kernel is out of memory for a new mount",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ELOOP: "too many symbolic links in the path",
}


class MountError(OSError):
    """mount(2) or umount2(2) failed.

    ``errno`` and ``filename`` are set as for any OSError; ``str()`` says what
    was attempted, the system error, and what to check.
    """

    def __init__(self, operation: str, target: Path, err: int, hint: str | None = None) -> None:
        hint = hint if hint is not None else _HINTS.get(err)
        message = f"{operation} failed: {os.strerror(err)}"
        if hint:
            message += f" ({hint})"
        super().__init__(err, message, str(target))
        self.operation = operation


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo, the parts this module uses."""

    mount_id: int
    parent_id: int
    root: str
    mount_point: Path
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


class _Libc:
    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.mount = lib.mount
        self.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self.mount.restype = ctypes.c_int
        self.umount2 = lib.umount2
        self.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.umount2.restype = ctypes.c_int


@functools.cache
def _libc() -> _Libc:
    return _Libc()


def mount_tmpfs(target: Path, *, size: str | None = None) -> None:
    """Mount a fresh tmpfs on ``target`` (an existing directory).

    ``size`` is passed as the tmpfs ``size=`` option (``"64m"``, ``"10%"``);
    without it the kernel default applies (half of RAM). The root of the new
    filesystem gets the tmpfs default mode 1777, as upstream.

    This does not check whether ``target`` is already a mount point; a second
    call stacks another tmpfs on top. Callers check :func:`is_mount_point` first.
    """
    data: bytes | None = None
    if size is not None:
        if not _SIZE_RE.fullmatch(size):
            raise ValueError(
                f"invalid tmpfs size {size!r}: expected digits with an optional k, m, g, t, p, e or % suffix"
            )
        data = f"size={size}".encode()
    libc = _libc()
    path = os.fsencode(target)
    while libc.mount(b"tmpfs", path, b"tmpfs", TMPFS_FLAGS, data) != 0:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            options = "nosuid,nodev" + (f",size={size}" if size is not None else "")
            raise MountError(f"mount -t tmpfs -o {options} tmpfs {target}", target, err)


def unmount(target: Path) -> bool:
    """Unmount the filesystem mounted on ``target``; True when one was.

    Succeeds without doing anything (False) when ``target`` is not a mount point
    (EINVAL) or does not exist (ENOENT), so retries and cleanup after a crash
    are safe. Only the topmost of stacked mounts is removed.
    """
    libc = _libc()
    path = os.fsencode(target)
    while libc.umount2(path, 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return False
        if err != errno.EINTR:
            raise MountError(f"umount {target}", target, err)
    return True


def _unescape(field: bytes) -> str:
    return os.fsdecode(_ESCAPE_RE.sub(lambda m: bytes([int(m.group(1), 8)]), field))


def parse_mountinfo(content: bytes) -> list[MountInfo]:
    """Parse the text of a mountinfo file, in file order (parents before children).

    Malformed lines are skipped rather than failing the whole table.
    """
    entries: list[MountInfo] = []
    for line in content.splitlines():
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
            entries.append(
                MountInfo(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    root=_unescape(fields[3]),
                    mount_point=Path(_unescape(fields[4])),
                    options=tuple(_unescape(fields[5]).split(",")),
                    fstype=_unescape(fields[sep + 1]),
                    source=_unescape(fields[sep + 2]),
                    super_options=tuple(_unescape(fields[sep + 3]).split(",")),
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


def _read_mountinfo() -> list[MountInfo]:
    try:
        return parse_mountinfo(MOUNTINFO.read_bytes())
    except OSError as exc:
        raise MountError(f"read {MOUNTINFO}", MOUNTINFO, exc.errno or errno.EIO, "is /proc mounted?") from exc


def _canonical(path: Path) -> Path:
    # mountinfo shows absolute paths with symlinks resolved.
    return Path(os.path.realpath(path))


def is_mount_point(target: Path) -> bool:
    """True when ``target`` is itself a mount point (not just on a mounted filesystem).

    A directory on another device than its parent is one (our tmpfs volumes: no table
    read). Otherwise /proc/self/mountinfo decides, which also sees bind mounts from the
    same filesystem; only when that cannot be read does the ``st_dev`` comparison decide.
    """
    path = _canonical(target)
    try:
        if os.lstat(path).st_dev != os.lstat(path.parent).st_dev:
            return True
    except OSError:
        pass  # missing, or an unreadable (e.g. disconnected) mount: the table decides
    try:
        table = MOUNTINFO.read_bytes()
    except OSError:
        return _is_mount_point_by_stat(path)
    want = _escape(os.fsencode(path))
    # field 5 (index 4) is the mount point; no need to parse the rest of each line
    return any(line.split(b" ", 5)[4:5] == [want] for line in table.splitlines())


def _escape(raw: bytes) -> bytes:
    """The octal escapes mountinfo uses for backslash, space, tab and newline."""
    for char, code in ((b"\\", b"\\134"), (b" ", b"\\040"), (b"\t", b"\\011"), (b"\n", b"\\012")):
        raw = raw.replace(char, code)
    return raw


def _is_mount_point_by_stat(path: Path) -> bool:
    try:
        st = os.lstat(path)
        parent = os.lstat(path.parent)
    except FileNotFoundError:
        return False
    if st.st_dev != parent.st_dev:
        return True
    return st.st_ino == parent.st_ino  # "/" is its own parent


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below ``prefix``, in mount order.

    Stacked mounts on one path appear once per mount, so unmounting the list
    in reverse order removes everything (children before their parents).
    """
    base = _canonical(prefix)
    return [
        entry.mount_point
        for entry in _read_mountinfo()
        if entry.mount_point == base or entry.mount_point.is_relative_to(base)
    ]


def is_tmpfs(target: Path) -> bool:
    """True when ``target`` is a mount point whose (topmost) filesystem is tmpfs."""
    path = _canonical(target)
    fstypes = [entry.fstype for entry in _read_mountinfo() if entry.mount_point == path]
    return bool(fstypes) and fstypes[-1] == "tmpfs"
