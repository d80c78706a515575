"""Atomic publication of provider files into a volume directory.

The layout matches what kubelet and the upstream secrets-store driver produce::

    target/..2024_01_31_12_00_00.k3j2h1g0/   real files (one "generation")
    target/..data -> ..2024_01_31_12_00_00.k3j2h1g0
    target/<name> -> ..data/<name>          one link per top-level entry

A new generation is written completely before the single `rename` of a fresh
`..data_tmp` link over `..data` makes it visible, so readers going through the
top-level links see either every old file or every new one.  Whatever a crash
leaves behind (a stale `..data_tmp`, an orphaned generation, missing or stale
top-level links) is repaired by the next `write_payloads` or by `recover`.

With a ``group`` (the pod's fsGroup, CSI ``volume_mount_group``) the target
directory, every directory of a generation and every file are owned by that
group, and each file's mode gains group-read (nothing else); without one the
ownership is left as the process creates it (root), as upstream.

Writers of the same target must be serialised by the caller.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DATA_LINK = "..data"
DATA_TMP_LINK = "..data_tmp"

MAX_PATH_LENGTH = 4096
MAX_NAME_LENGTH = 255
MAX_MODE = 0o777

_GENERATION_RE = re.compile(r"\.\.\d{4}(_\d{2}){5}\.[A-Za-z0-9_-]+")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Payload:
    path: str
    mode: int
    contents: bytes


class PayloadError(ValueError):
    """A payload that must not be written; the message names the path, never the contents."""


def validate_payloads(files: Sequence[Payload]) -> None:
    for payload in files:
        _validate_path(payload.path)
        if not 0 <= payload.mode <= MAX_MODE:
            raise PayloadError(f"{_shown(payload.path)}: invalid mode {payload.mode:#o}, must be 0..0o777")

    paths = [payload.path for payload in files]
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise PayloadError(f"{_shown(path)}: duplicate path")
        seen.add(path)
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in seen:
                raise PayloadError(f"{_shown(parent)}: is a file but also the parent of {_shown(path)}")


def _validate_path(path: str) -> None:
    if not path:
        raise PayloadError("'': path must not be empty")
    if "\0" in path:
        raise PayloadError(f"{_shown(path)}: path must not contain a NUL byte")
    try:
        encoded = path.encode()
    except UnicodeEncodeError:
        raise PayloadError(f"{_shown(path)}: path must be valid UTF-8 text") from None
    if path.startswith("/"):
        raise PayloadError(f"{_shown(path)}: path must be relative")
    if len(encoded) > MAX_PATH_LENGTH:
        raise PayloadError(f"{_shown(path)}: path longer than {MAX_PATH_LENGTH} bytes")
    parts = path.split("/")
    for part in parts:
        if part == "..":
            raise PayloadError(f"{_shown(path)}: path must not contain '..'")
        if len(part.encode()) > MAX_NAME_LENGTH:
            raise PayloadError(f"{_shown(path)}: path element longer than {MAX_NAME_LENGTH} bytes")
    if parts[0].startswith(".."):
        raise PayloadError(f"{_shown(path)}: path must not start with '..' (reserved)")
    if path == "." or os.path.normpath(path) != path:
        raise PayloadError(f"{_shown(path)}: path must be clean (no '.', empty elements or trailing '/')")


def _shown(path: str) -> str:
    return repr(path if len(path) <= 100 else path[:100] + "...")


def write_payloads(target: Path, files: Sequence[Payload], *, group: int | None = None) -> bool:
    """Publish `files` as the new content of `target`.

    Returns True when a new generation was written and False when the current
    one already holds exactly these paths and bytes (and, with `group`, that
    group); in that case nothing on disk is touched (unless a previous crash
    left something to repair).

    Every step works relative to one descriptor of `target` opened without
    following a link: no path below it is resolved twice, nothing outside it is reached.
    """
    validate_payloads(files)
    if group is None and not files:
        return False
    fd = os.open(target, _DIR_FLAGS)
    try:
        if group is not None:
            _chown_dir(fd, group)
        return _publish(fd, files, group) if files else False
    finally:
        os.close(fd)


def _publish(fd: int, files: Sequence[Payload], group: int | None) -> bool:
    names = set(os.listdir(fd))
    old = _recover_at(fd, names)
    top_names = {payload.path.split("/", 1)[0] for payload in files}
    for name in top_names & names:  # files a provider once wrote directly, not through our links
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            continue
        if stat.S_ISDIR(mode):
            shutil.rmtree(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)

    if old is not None and _generation_holds(fd, old, files, group):
        _align_links(fd, top_names, names)
        return False

    try:
        new = _write_generation(fd, files, group)
        os.symlink(new, DATA_TMP_LINK, dir_fd=fd)
        os.rename(DATA_TMP_LINK, DATA_LINK, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        # Drops the half-written generation; the old one is still what `..data` names.
        with contextlib.suppress(OSError):
            _recover_at(fd, set(os.listdir(fd)))
        raise

    _align_links(fd, top_names, names)
    if old is not None:
        shutil.rmtree(old, dir_fd=fd, ignore_errors=True)
    return True


def read_mounted_files(target: Path) -> dict[str, Path]:
    """Map every user-visible file's relative path to the real file it resolves to.

    Only top-level names starting with ".." are hidden; deeper names are user
    data.  Symlinks are resolved but anything resolving outside `target`, and
    directory links below the top level, are ignored.
    """
    root = target.resolve()
    found: dict[str, Path] = {}
    for entry in os.listdir(target):
        if entry.startswith(".."):
            continue
        real = Path(os.path.realpath(target / entry))
        if real == root or not real.is_relative_to(root):
            continue
        if real.is_file():
            found[entry] = real
        elif real.is_dir():
            for dirpath, _dirnames, filenames in os.walk(real, followlinks=False):
                for filename in filenames:
                    file_real = Path(os.path.realpath(os.path.join(dirpath, filename)))
                    if file_real.is_relative_to(root) and file_real.is_file():
                        relative = os.path.relpath(os.path.join(dirpath, filename), real)
                        found[f"{entry}/{relative}"] = file_real
    return found


def recover(target: Path) -> None:
    """Remove what an interrupted write left behind: `..data_tmp` and orphaned generations."""
    try:
        fd = os.open(target, _DIR_FLAGS)
    except OSError:  # missing, or not a directory: nothing of ours to repair
        return
    try:
        _recover_at(fd, set(os.listdir(fd)))
    finally:
        os.close(fd)


def _recover_at(fd: int, names: set[str]) -> str | None:
    """Repair the directory of `fd` (listed as `names`); returns the current generation's name."""
    if DATA_TMP_LINK in names and _is_link(fd, DATA_TMP_LINK):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(DATA_TMP_LINK, dir_fd=fd)
    current = _current_generation_at(fd)
    for name in names:
        if name != current and _GENERATION_RE.fullmatch(name) and not _is_link(fd, name):
            shutil.rmtree(name, dir_fd=fd, ignore_errors=True)
    return current


def _is_link(fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _current_generation_at(fd: int) -> str | None:
    try:
        name = os.readlink(DATA_LINK, dir_fd=fd)
        if not _GENERATION_RE.fullmatch(name):
            return None
        return name if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode) else None
    except OSError:
        return None


def group_mode(mode: int) -> int:
    """A file's mode when a group owns the volume: the given bits plus group-read, nothing else."""
    return mode | stat.S_IRGRP


def _generation_holds(fd: int, generation: str, files: Sequence[Payload], group: int | None = None) -> bool:
    """True when `generation` holds exactly `files` (paths, bytes; with `group`, its owner), and no link."""
    on_disk: dict[str, int] = {}  # relative path -> size
    root = os.open(generation, _DIR_FLAGS, dir_fd=fd)
    try:
        if not _list_tree(root, "", group, on_disk) or len(on_disk) != len(files):
            return False
        if any(on_disk.get(payload.path) != len(payload.contents) for payload in files):
            return False  # a new path or a new size: no need to read anything
        return all(
            _read_at(root, payload.path, len(payload.contents)) == payload.contents for payload in files
        )
    except OSError:  # e.g. a mode 0 file when not running as root: just write again
        return False
    finally:
        os.close(root)


def _list_tree(dir_fd: int, prefix: str, group: int | None, out: dict[str, int]) -> bool:
    """Record the regular files below `dir_fd` (relative path -> size); False at a link or a foreign group."""
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode) or (group is not None and info.st_gid != group):
                return False
            if stat.S_ISDIR(info.st_mode):
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    if not _list_tree(child, f"{prefix}{entry.name}/", group, out):
                        return False
                finally:
                    os.close(child)
            else:
                out[prefix + entry.name] = info.st_size
    return True


def _read_at(dir_fd: int, path: str, size: int) -> bytes:
    """Up to `size` + 1 bytes of `path` below `dir_fd` (one more than expected shows a longer file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks: list[bytes] = []
        left = size + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _chown_dir(fd: int, group: int) -> None:
    """Give the volume's root directory (the tmpfs) to `group`.

    Every republish passes here: an unchanged owner is left alone (no inode write per pass).
    """
    if os.fstat(fd).st_gid != group:
        os.fchown(fd, -1, group)


def _write_generation(fd: int, files: Sequence[Payload], group: int | None = None) -> str:
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    name = f"..{stamp}.{secrets.token_hex(5)}"
    os.mkdir(name, 0o700, dir_fd=fd)
    root_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
    opened: dict[str, int] = {"": root_fd}  # parent directory (relative path) -> descriptor
    try:
        if group is not None:
            os.fchown(root_fd, -1, group)
        os.fchmod(root_fd, 0o755)
        for payload in files:
            parent, _, leaf = payload.path.rpartition("/")
            dir_fd = opened.get(parent)
            if dir_fd is None:
                dir_fd = opened[parent] = _open_dirs(root_fd, parent.split("/"), group)
            _write_file(dir_fd, leaf, payload, group)
    finally:
        for dir_fd in opened.values():
            os.close(dir_fd)
    return name


def _open_dirs(root_fd: int, parts: Iterable[str], group: int | None = None) -> int:
    """Open (creating as needed) the directory `parts` below `root_fd` without following any link."""
    fd = root_fd
    for part in parts:
        created = True
        try:
            os.mkdir(part, 0o755, dir_fd=fd)
        except FileExistsError:
            created = False
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            if fd != root_fd:
                os.close(fd)
        fd = child
        if created:
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, 0o755)  # mkdir's mode is filtered by the umask
    return fd


def _write_file(dir_fd: int, name: str, payload: Payload, group: int | None = None) -> None:
    fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(payload.contents)
        while view:
            view = view[os.write(fd, view) :]
        # Explicit chmod: the mode given to open() is filtered by the umask. The group is set
        # first (chown may clear mode bits), on the open descriptor (no path, no link followed).
        if group is not None:
            os.fchown(fd, -1, group)
            os.fchmod(fd, group_mode(payload.mode))
        else:
            os.fchmod(fd, payload.mode)
    finally:
        os.close(fd)


def _align_links(fd: int, top_names: set[str], names: set[str]) -> None:
    """Make the top-level links exactly `name -> ..data/name` for `top_names`; touch nothing already right.

    `names` is what the directory held before this write (links to remove can only be among them).
    """
    for name in sorted(top_names):
        wanted = f"{DATA_LINK}/{name}"
        if name in names:
            try:
                if os.readlink(name, dir_fd=fd) == wanted:
                    continue
                os.unlink(name, dir_fd=fd)
            except OSError as err:  # EINVAL: not a link (then symlink() below refuses to replace it)
                if err.errno not in (errno.EINVAL, errno.ENOENT):
                    raise
        os.symlink(wanted, name, dir_fd=fd)
    for name in names - top_names:
        if (
            not name.startswith("..")
            and _is_link(fd, name)
            and os.readlink(name, dir_fd=fd) == f"{DATA_LINK}/{name}"
        ):
            os.unlink(name, dir_fd=fd)
