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
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
    """
    validate_payloads(files)
    if group is not None:
        _chown_target(target, group)
    if not files:
        return False

    recover(target)
    top_names = {payload.path.split("/", 1)[0] for payload in files}
    for name in top_names:  # files a provider once wrote directly, not through our links
        entry = target / name
        if entry.is_symlink() or not entry.exists():
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()

    old = _current_generation(target)
    if old is not None and _generation_holds(target / old, files, group):
        _align_links(target, top_names)
        return False

    try:
        new = _write_generation(target, files, group)
        os.symlink(new, target / DATA_TMP_LINK)
        os.rename(target / DATA_TMP_LINK, target / DATA_LINK)
    except BaseException:
        # Drops the half-written generation; the old one is still what `..data` names.
        with contextlib.suppress(OSError):
            recover(target)
        raise

    _align_links(target, top_names)
    if old is not None:
        shutil.rmtree(target / old, ignore_errors=True)
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
    if not target.is_dir():
        return
    tmp_link = target / DATA_TMP_LINK
    if tmp_link.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
    current = _current_generation(target)
    for entry in os.scandir(target):
        if entry.name != current and _GENERATION_RE.fullmatch(entry.name) and not entry.is_symlink():
            shutil.rmtree(entry.path, ignore_errors=True)


def _current_generation(target: Path) -> str | None:
    try:
        name = os.readlink(target / DATA_LINK)
    except OSError:
        return None
    if not _GENERATION_RE.fullmatch(name) or not (target / name).is_dir() or (target / name).is_symlink():
        return None
    return name


def group_mode(mode: int) -> int:
    """A file's mode when a group owns the volume: the given bits plus group-read, nothing else."""
    return mode | stat.S_IRGRP


def _generation_holds(generation: Path, files: Sequence[Payload], group: int | None = None) -> bool:
    on_disk: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(generation, followlinks=False):
        for name in [*dirnames, *filenames]:
            entry = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(entry.st_mode) or (group is not None and entry.st_gid != group):
                return False
        on_disk.update(os.path.relpath(os.path.join(dirpath, name), generation) for name in filenames)
    if on_disk != {payload.path for payload in files}:
        return False
    try:
        return all((generation / payload.path).read_bytes() == payload.contents for payload in files)
    except OSError:  # e.g. a mode 0 file when not running as root: just write again
        return False


def _chown_target(target: Path, group: int) -> None:
    """Give the volume's root directory (the tmpfs) to `group`, without following a link.

    Every republish passes here: an unchanged owner is left alone (no inode write per pass).
    """
    fd = os.open(target, _DIR_FLAGS)
    try:
        if os.fstat(fd).st_gid != group:
            os.fchown(fd, -1, group)
    finally:
        os.close(fd)


def _write_generation(target: Path, files: Sequence[Payload], group: int | None = None) -> str:
    stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S")
    name = f"..{stamp}.{secrets.token_hex(5)}"
    os.mkdir(target / name, 0o700)
    root_fd = os.open(target / name, _DIR_FLAGS)
    try:
        if group is not None:
            os.fchown(root_fd, -1, group)
        os.fchmod(root_fd, 0o755)
        for payload in files:
            *parents, leaf = payload.path.split("/")
            dir_fd = _open_dirs(root_fd, parents, group)
            try:
                _write_file(dir_fd, leaf, payload, group)
            finally:
                if dir_fd != root_fd:
                    os.close(dir_fd)
    finally:
        os.close(root_fd)
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


def _align_links(target: Path, top_names: set[str]) -> None:
    """Make the top-level links exactly `name -> ..data/name` for `top_names`; touch nothing already right."""
    for name in sorted(top_names):
        link = target / name
        wanted = f"{DATA_LINK}/{name}"
        if link.is_symlink():
            if os.readlink(link) == wanted:
                continue
            link.unlink()
        os.symlink(wanted, link)
    for entry in os.scandir(target):
        if (
            entry.name not in top_names
            and not entry.name.startswith("..")
            and entry.is_symlink()
            and os.readlink(entry.path) == f"{DATA_LINK}/{entry.name}"
        ):
            os.unlink(entry.path)
