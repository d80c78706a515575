"""Tests for sscsi_driver.mounter.

The parser tests run anywhere. The others really mount tmpfs below tmp_path and
are skipped unless the process may mount (root with CAP_SYS_ADMIN). Every real
mount test checks that it left no mount behind.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sscsi_driver import mounter
from sscsi_driver.mounter import (
    MountError,
    is_mount_point,
    is_tmpfs,
    mount_tmpfs,
    mounts_under,
    parse_mountinfo,
    unmount,
)

SAMPLE = (
    b"22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
    b"35 22 0:31 / /tmp rw,nosuid,nodev shared:14 - tmpfs tmpfs rw,size=4096k\n"
    b"40 35 0:40 / /tmp/with\\040space\\011tab\\134back rw,nosuid,nodev - tmpfs tmpfs rw\n"
    b"41 35 0:41 /sub /tmp/bind rw master:3 propagate_from:1 - ext4 /dev/sdb1 rw,errors=continue\n"
    b"garbage line\n"
)


def test_parse_mountinfo_fields_and_escapes() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert [e.mount_point for e in entries] == [
        Path("/"),
        Path("/tmp"),
        Path("/tmp/with space\ttab\\back"),
        Path("/tmp/bind"),
    ]
    tmp = entries[1]
    assert (tmp.mount_id, tmp.parent_id, tmp.fstype, tmp.source) == (35, 22, "tmpfs", "tmpfs")
    assert tmp.options == ("rw", "nosuid", "nodev")
    assert tmp.super_options == ("rw", "size=4096k")
    bind = entries[3]  # several optional fields before the separator
    assert (bind.root, bind.fstype, bind.source) == ("/sub", "ext4", "/dev/sdb1")


def test_parsed_queries_use_mountinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_bytes(SAMPLE)
    monkeypatch.setattr(mounter, "MOUNTINFO", table)
    monkeypatch.setattr(mounter, "_canonical", lambda p: p)
    assert is_mount_point(Path("/tmp/with space\ttab\\back"))
    assert not is_mount_point(Path("/tmp/other"))
    assert is_tmpfs(Path("/tmp"))
    assert not is_tmpfs(Path("/tmp/bind"))
    assert not is_tmpfs(Path("/tmp/other"))
    assert mounts_under(Path("/tmp")) == [Path("/tmp"), Path("/tmp/with space\ttab\\back"), Path("/tmp/bind")]
    assert mounts_under(Path("/tm")) == []  # a prefix is matched by path components, not characters


def test_is_mount_point_falls_back_to_st_dev(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mounter, "MOUNTINFO", tmp_path / "missing")
    assert is_mount_point(Path("/"))
    assert not is_mount_point(tmp_path)
    assert not is_mount_point(tmp_path / "nope")
    if os.lstat("/proc").st_dev != os.lstat("/").st_dev:
        assert is_mount_point(Path("/proc"))


def test_unreadable_mountinfo_is_a_mount_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mounter, "MOUNTINFO", tmp_path / "missing")
    with pytest.raises(MountError, match="is /proc mounted"):
        mounts_under(tmp_path)


@pytest.mark.parametrize("size", ["", "1m,exec", "10 m", "-1", "1x", "0x10"])
def test_invalid_size_is_rejected(tmp_path: Path, size: str) -> None:
    with pytest.raises(ValueError, match="invalid tmpfs size"):
        mount_tmpfs(tmp_path, size=size)


# ---------------------------------------------------------------- real mounts


def _can_mount(base: Path) -> str | None:
    """None when tmpfs can be mounted here, otherwise the reason it cannot."""
    if os.geteuid() != 0:
        return "real tmpfs mounts need root"
    probe = base / "probe"
    probe.mkdir()
    try:
        mount_tmpfs(probe)
    except MountError as exc:
        return f"mounting tmpfs is not permitted here: {exc}"
    unmount(probe)
    probe.rmdir()
    return None


@pytest.fixture(scope="module")
def mount_allowed(tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = _can_mount(tmp_path_factory.mktemp("probe"))
    if reason:
        pytest.skip(reason)


@pytest.fixture
def root(mount_allowed: None, tmp_path: Path) -> Iterator[Path]:
    """tmp_path for tests that mount; fails the test if a mount is left behind, then cleans up."""
    yield tmp_path
    leaked = mounts_under(tmp_path)
    for path in reversed(leaked):
        unmount(path)
    assert mounts_under(tmp_path) == []
    assert leaked == [], f"test leaked mounts: {leaked}"


def _mountinfo_entry(target: Path) -> mounter.MountInfo:
    (entry,) = [
        e for e in parse_mountinfo(Path("/proc/self/mountinfo").read_bytes()) if e.mount_point == target
    ]
    return entry


def test_mount_unmount_roundtrip(root: Path) -> None:
    target = root / "vol"
    target.mkdir()
    assert not is_mount_point(target)
    assert not is_tmpfs(target)

    mount_tmpfs(target)
    try:
        assert is_mount_point(target)
        assert is_tmpfs(target)
        assert os.stat(target).st_dev != os.stat(root).st_dev
        entry = _mountinfo_entry(target)
        assert {"nosuid", "nodev"} <= set(entry.options)
        assert "noexec" not in entry.options
        assert "ro" not in entry.options
        # Files written by the driver stay readable (and the root keeps the tmpfs default 1777).
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o1777
        (target / "foo").write_text("secret")
        assert (target / "foo").read_text() == "secret"
    finally:
        unmount(target)

    assert not is_mount_point(target)
    assert not (target / "foo").exists(), "contents must vanish with the tmpfs"


def test_mount_with_size(root: Path) -> None:
    target = root / "sized"
    target.mkdir()
    mount_tmpfs(target, size="1m")
    try:
        assert "size=1024k" in _mountinfo_entry(target).super_options
        assert os.statvfs(target).f_blocks * os.statvfs(target).f_frsize == 1024 * 1024
    finally:
        unmount(target)


def test_mount_missing_target_is_actionable(root: Path) -> None:
    target = root / "missing"
    with pytest.raises(MountError) as info:
        mount_tmpfs(target)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(target)
    assert "create the directory first" in str(info.value)
    assert "mount -t tmpfs" in str(info.value)


def test_unmount_not_mounted_and_missing_are_noops(root: Path) -> None:
    plain = root / "plain"
    plain.mkdir()
    unmount(plain)
    unmount(root / "does-not-exist")
    assert plain.is_dir()


def test_unmount_busy_raises(root: Path) -> None:
    target = root / "busy"
    target.mkdir()
    mount_tmpfs(target)
    try:
        fd = os.open(target / "held", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            with pytest.raises(MountError) as info:
                unmount(target)
            assert info.value.errno == errno.EBUSY
        finally:
            os.close(fd)
    finally:
        unmount(target)


def test_mounts_under_lists_nested_and_stacked(root: Path) -> None:
    outer = root / "a"
    outer.mkdir()
    other = root / "ab"  # shares the string prefix "a" but is not below it
    other.mkdir()
    mount_tmpfs(outer)
    inner = outer / "b"
    inner.mkdir()
    mount_tmpfs(inner)
    mount_tmpfs(inner)  # stacked
    mount_tmpfs(other)
    try:
        assert mounts_under(outer) == [outer, inner, inner]
        assert mounts_under(root) == [outer, inner, inner, other]
        assert mounts_under(inner) == [inner, inner]
    finally:
        for path in reversed(mounts_under(root)):
            unmount(path)
    assert mounts_under(root) == []


@pytest.mark.parametrize(
    "name", ["with space", "tab\there", "back\\slash", "new\nline", "pods uid/volumes x"]
)
def test_paths_needing_mountinfo_escapes(root: Path, name: str) -> None:
    target = root / name
    target.mkdir(parents=True)
    mount_tmpfs(target)
    try:
        assert is_mount_point(target)
        assert is_tmpfs(target)
        assert mounts_under(root) == [target]
    finally:
        unmount(target)
    assert not is_mount_point(target)


def test_symlinked_target_is_resolved(root: Path) -> None:
    real = root / "real"
    real.mkdir()
    link = root / "link"
    link.symlink_to(real)
    mount_tmpfs(link)
    try:
        assert is_mount_point(real)
        assert is_mount_point(link)
        assert mounts_under(link) == [real]
    finally:
        unmount(link)
