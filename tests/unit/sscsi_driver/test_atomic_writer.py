from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sscsi_driver import atomic_writer
from sscsi_driver.atomic_writer import (
    Payload,
    PayloadError,
    read_mounted_files,
    recover,
    validate_payloads,
    write_payloads,
)

GENERATION = re.compile(r"\.\.(\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2})\.[A-Za-z0-9_-]+")

Snapshot = dict[str, tuple[object, ...]]


def p(path: str, contents: bytes = b"x", mode: int = 0o644) -> Payload:
    return Payload(path=path, mode=mode, contents=contents)


def payloads(files: dict[str, bytes]) -> list[Payload]:
    return [p(path, contents) for path, contents in files.items()]


def snapshot(target: Path) -> Snapshot:
    """Everything below target, without following links, including mtimes and inodes."""
    state: Snapshot = {".": ("dir", os.stat(target).st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            key = os.path.relpath(path, target)
            if stat.S_ISLNK(info.st_mode):
                state[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                state[key] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns, info.st_ino)
            else:
                contents = Path(path).read_bytes()
                state[key] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns, info.st_ino, contents)
    return state


def generations(target: Path) -> set[str]:
    return {name for name in os.listdir(target) if GENERATION.fullmatch(name)}


def view(target: Path) -> dict[str, bytes]:
    return {rel: real.read_bytes() for rel, real in read_mounted_files(target).items()}


def assert_clean(target: Path, files: dict[str, bytes]) -> None:
    """The volume holds exactly `files`, through one generation, with nothing left over."""
    current = os.readlink(target / "..data")
    assert generations(target) == {current}
    top = {path.split("/")[0] for path in files}
    assert set(os.listdir(target)) == {"..data", current, *top}
    for name in top:
        assert os.readlink(target / name) == f"..data/{name}"
    assert view(target) == files


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    target = tmp_path / "volume"
    target.mkdir()
    assert write_payloads(target, [p("a", b"old-a"), p("dir/b", b"old-b")])
    return target


# --- layout -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("umask")
def test_first_write_layout(tmp_path: Path) -> None:
    files = [
        p("plain.txt", b"plain", 0o644),
        p("nested/deeper/leaf", b"leaf", 0o600),
        p("nested/sibling", b"sibling", 0o640),
        p("zero", b"no permissions", 0),
        p("exec", b"#!/bin/sh\n", 0o755),
        p("empty", b"", 0o444),
    ]
    assert write_payloads(tmp_path, files) is True

    generation = os.readlink(tmp_path / "..data")
    match = GENERATION.fullmatch(generation)
    assert match is not None
    stamp = datetime.strptime(match.group(1), "%Y_%m_%d_%H_%M_%S").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 120

    gen_dir = tmp_path / generation
    assert gen_dir.is_dir() and not gen_dir.is_symlink()
    assert stat.S_IMODE(gen_dir.stat().st_mode) == 0o755
    for directory in ("nested", "nested/deeper"):
        info = os.lstat(gen_dir / directory)
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o755

    assert set(os.listdir(tmp_path)) == {"..data", generation, "plain.txt", "nested", "zero", "exec", "empty"}
    for name in ("plain.txt", "nested", "zero", "exec", "empty"):
        assert os.readlink(tmp_path / name) == f"..data/{name}"

    for payload in files:
        real = gen_dir / payload.path
        info = os.lstat(real)
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == payload.mode
        if payload.mode & 0o400 or os.geteuid() == 0:
            assert (tmp_path / payload.path).read_bytes() == payload.contents

    mounted = read_mounted_files(tmp_path)
    assert mounted == {payload.path: gen_dir / payload.path for payload in files}


def test_identical_write_changes_nothing(volume: Path) -> None:
    before = snapshot(volume)
    generation = os.readlink(volume / "..data")

    # Order and mode do not matter: only paths and bytes are compared.
    assert write_payloads(volume, [p("dir/b", b"old-b", 0o600), p("a", b"old-a", 0o400)]) is False

    assert snapshot(volume) == before
    assert os.readlink(volume / "..data") == generation


def test_changed_content_switches_generation(volume: Path) -> None:
    old_generation = os.readlink(volume / "..data")
    new = {"a": b"new-a", "dir/c": b"new-c", "added/x": b"new-x"}

    assert write_payloads(volume, payloads(new)) is True

    assert os.readlink(volume / "..data") != old_generation
    assert not (volume / old_generation).exists()
    assert not (volume / "dir" / "b").exists()
    assert_clean(volume, new)


def test_removed_top_level_entry_disappears(volume: Path) -> None:
    assert write_payloads(volume, [p("a", b"old-a")]) is True

    assert not os.path.lexists(volume / "dir")
    assert_clean(volume, {"a": b"old-a"})


def test_same_paths_different_bytes_is_a_change(volume: Path) -> None:
    assert write_payloads(volume, [p("a", b"old-a"), p("dir/b", b"old-B")]) is True
    assert_clean(volume, {"a": b"old-a", "dir/b": b"old-B"})


def test_unrelated_entries_are_left_alone(volume: Path, tmp_path: Path) -> None:
    (volume / "foreign-link").symlink_to(tmp_path)
    (volume / "foreign-file").write_bytes(b"mine")

    assert write_payloads(volume, [p("z", b"z")]) is True

    assert os.readlink(volume / "foreign-link") == str(tmp_path)
    assert (volume / "foreign-file").read_bytes() == b"mine"
    assert not os.path.lexists(volume / "a")


def test_legacy_entries_are_replaced_by_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"written directly")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "old").write_bytes(b"stale")

    assert write_payloads(tmp_path, [p("a", b"new-a"), p("dir/b", b"new-b")]) is True

    assert_clean(tmp_path, {"a": b"new-a", "dir/b": b"new-b"})


def test_legacy_entries_are_removed_even_if_content_is_unchanged(volume: Path) -> None:
    (volume / "a").unlink()
    (volume / "a").write_bytes(b"written directly")

    assert write_payloads(volume, [p("a", b"old-a"), p("dir/b", b"old-b")]) is False

    assert_clean(volume, {"a": b"old-a", "dir/b": b"old-b"})


def test_wrong_top_level_links_are_replaced(volume: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"not yours")
    (volume / "a").unlink()
    (volume / "a").symlink_to(outside)
    (volume / "dir").unlink()
    (volume / "dir").symlink_to("..data/a")

    assert write_payloads(volume, [p("a", b"new-a"), p("dir/b", b"new-b")]) is True

    assert_clean(volume, {"a": b"new-a", "dir/b": b"new-b"})
    assert outside.read_bytes() == b"not yours"


def test_generation_holding_a_link_is_rewritten(volume: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"old-a")
    generation = volume / os.readlink(volume / "..data")
    (generation / "a").unlink()
    (generation / "a").symlink_to(outside)

    assert write_payloads(volume, [p("a", b"old-a"), p("dir/b", b"old-b")]) is True

    assert_clean(volume, {"a": b"old-a", "dir/b": b"old-b"})
    assert read_mounted_files(volume)["a"].is_relative_to(volume.resolve())


def test_empty_payload_writes_nothing(tmp_path: Path, volume: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_payloads(empty, []) is False
    assert os.listdir(empty) == []

    before = snapshot(volume)
    assert write_payloads(volume, []) is False
    assert snapshot(volume) == before


def test_missing_links_are_repaired_without_new_generation(volume: Path) -> None:
    generation = os.readlink(volume / "..data")
    (volume / "a").unlink()

    assert write_payloads(volume, [p("a", b"old-a"), p("dir/b", b"old-b")]) is False

    assert os.readlink(volume / "..data") == generation
    assert_clean(volume, {"a": b"old-a", "dir/b": b"old-b"})


# --- validation ---------------------------------------------------------------------------------

INVALID: list[tuple[str, list[Payload], str]] = [
    ("empty", [p("")], "empty"),
    ("absolute", [p("/etc/passwd")], "relative"),
    ("dotdot", [p("..")], r"'\.\.'"),
    ("dotdot prefix", [p("../escape")], r"'\.\.'"),
    ("dotdot middle", [p("a/../b")], r"'\.\.'"),
    ("dotdot last", [p("a/..")], r"'\.\.'"),
    ("reserved data", [p("..data")], "reserved"),
    ("reserved data tmp", [p("..data_tmp/x")], "reserved"),
    ("dot dot dot", [p("...")], "reserved"),
    ("dot", [p(".")], "clean"),
    ("dot prefix", [p("./a")], "clean"),
    ("dot middle", [p("a/./b")], "clean"),
    ("trailing slash", [p("a/")], "clean"),
    ("double slash", [p("a//b")], "clean"),
    ("nul", [p("a\0b")], "NUL"),
    ("surrogate", [p("a\udc80")], "UTF-8"),
    ("long element", [p("x" * 256)], "element longer"),
    ("long nested element", [p("a/" + "x" * 256)], "element longer"),
    ("long multibyte element", [p("é" * 128)], "element longer"),
    ("long path", [p("a/" * 2048 + "b")], "path longer"),
    ("negative mode", [p("a", mode=-1)], "invalid mode"),
    ("mode too big", [p("a", mode=0o1000)], "invalid mode"),
    ("setuid mode", [p("a", mode=0o4755)], "invalid mode"),
    ("duplicate", [p("a"), p("b"), p("a")], "duplicate"),
    ("file and parent", [p("a"), p("a/b")], "parent"),
    ("parent and file", [p("x/y/z"), p("x/y")], "parent"),
    ("one bad among good", [p("fine"), p("also/fine"), p("../bad")], r"'\.\.'"),
]


@pytest.mark.parametrize(("files", "message"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_payload_is_rejected_and_volume_untouched(
    volume: Path, files: list[Payload], message: str
) -> None:
    secret = b"TOP-SECRET-CONTENT"
    files = [Payload(f.path, f.mode, secret) for f in files]
    before = snapshot(volume)

    with pytest.raises(PayloadError, match=message) as raised:
        write_payloads(volume, files)

    assert "TOP-SECRET" not in str(raised.value)
    assert snapshot(volume) == before
    with pytest.raises(PayloadError, match=message):
        validate_payloads(files)


@pytest.mark.parametrize(
    "path",
    ["a", "a/b/c", "a/..b", "a/...", ".hidden", "a/.b", "ü/名前", "x" * 255, "é" * 127, "a/" * 2047 + "bc"],
)
def test_valid_paths_are_accepted(path: str) -> None:
    validate_payloads([p(path)])


def test_mode_bounds_are_accepted() -> None:
    validate_payloads([p("none", mode=0), p("all", mode=0o777), p("sibling/none", mode=0)])


def test_long_path_is_shortened_in_message() -> None:
    with pytest.raises(PayloadError, match="path longer than 4096 bytes") as raised:
        validate_payloads([p("a/" * 3000 + "b")])
    assert len(str(raised.value)) < 300


def test_error_names_the_offending_path() -> None:
    with pytest.raises(PayloadError, match=re.escape("'bad/../path'")):
        validate_payloads([p("good"), p("bad/../path")])
    with pytest.raises(PayloadError, match=r"'m'.*invalid mode"):
        validate_payloads([p("m", mode=512)])


# --- failures and crashes -----------------------------------------------------------------------


def _fail_on_call(original: Callable[..., Any], call: int) -> Callable[..., Any]:
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            raise OSError(errno.ENOSPC, "injected failure")
        return original(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("step", ["second file", "rename"])
def test_failed_write_keeps_old_generation(volume: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    old_generation = os.readlink(volume / "..data")
    if step == "second file":
        monkeypatch.setattr(atomic_writer, "_write_file", _fail_on_call(atomic_writer._write_file, 2))
    else:
        monkeypatch.setattr(os, "rename", _fail_on_call(os.rename, 1))

    with pytest.raises(OSError, match="injected failure"):
        write_payloads(volume, [p("a", b"new-a"), p("dir/b", b"new-b"), p("c", b"new-c")])

    assert os.readlink(volume / "..data") == old_generation
    assert_clean(volume, {"a": b"old-a", "dir/b": b"old-b"})

    monkeypatch.undo()
    assert write_payloads(volume, [p("a", b"new-a"), p("c", b"new-c")]) is True
    assert_clean(volume, {"a": b"new-a", "c": b"new-c"})


OLD = {"a": b"old-a", "b": b"old-b", "dir/e": b"old-e"}
NEW = {"a": b"new-a", "b": b"new-b", "c": b"new-c", "other/f": b"new-f"}


def _kill_self(*_args: Any, **_kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_kill(step: str) -> None:
    """Runs in the forked child: make the write die by SIGKILL at `step`."""
    if step == "second file":
        write_file = atomic_writer._write_file
        calls = 0

        def killing_write(*args: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                _kill_self()
            write_file(*args)

        atomic_writer._write_file = killing_write  # type: ignore[assignment]
    elif step == "rename":
        os.rename = _kill_self
    elif step == "links":
        atomic_writer._align_links = _kill_self
    elif step == "old generation removal":
        shutil.rmtree = _kill_self  # type: ignore[assignment]
    else:
        raise AssertionError(step)


@pytest.mark.parametrize(
    ("step", "visible"),
    [("second file", "old"), ("rename", "old"), ("links", "new"), ("old generation removal", "new")],
)
def test_sigkill_during_write_leaves_consistent_volume(tmp_path: Path, step: str, visible: str) -> None:
    assert write_payloads(tmp_path, payloads(OLD))
    old_generation = os.readlink(tmp_path / "..data")

    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            _arm_kill(step)
            write_payloads(tmp_path, payloads(NEW))
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    seen = view(tmp_path)
    if visible == "old":
        assert os.readlink(tmp_path / "..data") == old_generation
        assert seen == OLD
    else:
        assert os.readlink(tmp_path / "..data") != old_generation
        assert seen and all(NEW.get(path) == contents for path, contents in seen.items())
    assert len(generations(tmp_path)) == 2  # the crash left an orphan behind
    assert os.path.lexists(tmp_path / "..data_tmp") == (step == "rename")

    current = os.readlink(tmp_path / "..data")
    recover(tmp_path)
    assert generations(tmp_path) == {current}
    assert not os.path.lexists(tmp_path / "..data_tmp")
    assert view(tmp_path) == seen

    write_payloads(tmp_path, payloads(NEW))
    assert_clean(tmp_path, NEW)


def test_recover_is_safe_any_time(tmp_path: Path, volume: Path) -> None:
    recover(tmp_path / "missing")
    recover(tmp_path / "volume")

    before = snapshot(volume)
    recover(volume)
    assert snapshot(volume) == before


def test_recover_keeps_non_generation_entries(volume: Path) -> None:
    (volume / "..not_a_generation").mkdir()
    (volume / "..2024_01_01_00_00_00.link").symlink_to(os.readlink(volume / "..data"))
    (volume / "..2024_01_01_00_00_00.orphan").mkdir()
    (volume / "..data_tmp").symlink_to("..2024_01_01_00_00_00.orphan")

    recover(volume)

    assert (volume / "..not_a_generation").is_dir()
    assert os.path.islink(volume / "..2024_01_01_00_00_00.link")
    assert not os.path.lexists(volume / "..2024_01_01_00_00_00.orphan")
    assert not os.path.lexists(volume / "..data_tmp")
    assert view(volume) == {"a": b"old-a", "dir/b": b"old-b"}


# --- read_mounted_files -------------------------------------------------------------------------


def test_read_mounted_files_maps_visible_files(volume: Path) -> None:
    generation = volume / os.readlink(volume / "..data")

    mounted = read_mounted_files(volume)

    assert mounted == {"a": generation / "a", "dir/b": generation / "dir" / "b"}
    assert all(path.is_absolute() for path in mounted.values())


def test_read_mounted_files_never_leaves_target(volume: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    generation = volume / os.readlink(volume / "..data")

    (volume / "escape-dir").symlink_to(outside)
    (volume / "escape-file").symlink_to(outside / "secret")
    (volume / "escape-relative").symlink_to("../outside/secret")
    (volume / "loop").symlink_to(".")
    (volume / "dangling").symlink_to("nowhere")
    (generation / "dir" / "escape-nested").symlink_to(outside / "secret")
    (generation / "dir" / "escape-nested-dir").symlink_to(outside)
    (volume / "..hidden").write_bytes(b"hidden")

    assert read_mounted_files(volume) == {"a": generation / "a", "dir/b": generation / "dir" / "b"}


def test_read_mounted_files_includes_nested_dot_names(tmp_path: Path) -> None:
    write_payloads(tmp_path, [p("a/..b", b"1"), p("a/.c/d", b"2")])

    assert view(tmp_path) == {"a/..b": b"1", "a/.c/d": b"2"}


# --- property -----------------------------------------------------------------------------------

_HOSTILE_ELEMENTS = st.sampled_from(
    ["..", ".", "", "..data", "..data_tmp", "...", "..a", "x" * 256, "é" * 128, "a\0", "\udc80"]
)
_BENIGN_ELEMENTS = st.one_of(
    st.sampled_from(["a", "b", "c", ".a", "ü", "名前", "\\", " ", "\U0001f511", "x" * 255, "é" * 127]),
    st.text(st.characters(codec="utf-8", exclude_characters="/\0."), min_size=1, max_size=8),
)
_BENIGN_PATHS = st.lists(_BENIGN_ELEMENTS, min_size=1, max_size=4).map("/".join)
_HOSTILE_PATHS = st.one_of(
    st.lists(st.one_of(_BENIGN_ELEMENTS, _HOSTILE_ELEMENTS), min_size=1, max_size=4).map("/".join),
    st.builds(
        lambda lead, path: lead + path, st.sampled_from(["/", "./", "//", "../", "..", "."]), _BENIGN_PATHS
    ),
    st.text(max_size=16),
)
_MODES = st.integers(0o400, 0o777)
_ANY_MODES = st.one_of(_MODES, st.sampled_from([-1, 0o1000, 0o4644]))
# Half the lists are well-formed (apart from duplicates and file/parent clashes) so writes really happen.
_CONTENTS = st.binary(max_size=24)
_PAYLOADS = st.one_of(
    st.lists(st.builds(Payload, path=_BENIGN_PATHS, mode=_MODES, contents=_CONTENTS), max_size=4),
    st.lists(
        st.builds(
            Payload,
            path=st.one_of(_BENIGN_PATHS, _HOSTILE_PATHS),
            mode=_ANY_MODES,
            contents=_CONTENTS,
        ),
        max_size=4,
    ),
)


def assert_confined(target: Path) -> None:
    root = target.resolve()
    for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            assert os.path.exists(path), f"dangling {path}"
            assert Path(os.path.realpath(path)).is_relative_to(root), path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(_PAYLOADS, min_size=1, max_size=2))
def test_property_written_files_stay_inside_target(rounds: Sequence[list[Payload]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "volume"
        target.mkdir()
        expected: dict[str, bytes] = {}
        modes: dict[str, int] = {}
        # Replaying the first list (reordered) exercises the unchanged path too.
        for files in [*rounds, rounds[0][::-1]]:
            before = snapshot(target)
            try:
                changed = write_payloads(target, files)
            except PayloadError:
                assert snapshot(target) == before
                continue
            wanted = {f.path: f.contents for f in files}
            if not files or wanted == expected:
                # Nothing new (modes are not compared, as upstream): nothing may have been touched.
                assert changed is False
                assert snapshot(target) == before
            else:
                assert changed is True
                expected, modes = wanted, {f.path: f.mode for f in files}
            assert_confined(target)
            assert view(target) == expected
            for path, contents in expected.items():
                assert (target / path).read_bytes() == contents
                assert stat.S_IMODE((target / path).stat().st_mode) == modes[path]
            if expected:
                assert_clean(target, expected)
