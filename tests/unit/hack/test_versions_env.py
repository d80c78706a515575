"""hack/versions_env.py: hack/versions.env read as make and sh read it, by every Python caller."""

from __future__ import annotations

from pathlib import Path

import versions_env


def test_pairs_are_read_as_make_and_sh_read_them(tmp_path: Path) -> None:
    env = tmp_path / "versions.env"
    env.write_text("# a comment\n\nA=1\n  B = two \nC='quoted'\nD=\"x=y\"\nnot a pair\n")
    assert versions_env.read_env_file(env) == {"A": "1", "B": "two", "C": "quoted", "D": "x=y"}


def test_the_pinned_file_gives_the_tool_directories() -> None:
    pinned = versions_env.versions()
    assert pinned["KUBE_VERSION"] and pinned["TOOLS_CACHE"].startswith("/")
    assert versions_env.kube_bin() == Path(pinned["TOOLS_CACHE"]) / f"kube-{pinned['KUBE_VERSION']}" / "bin"
    assert versions_env.tools_bin() == Path(pinned["TOOLS_CACHE"]) / "tools" / "bin"
