"""hack/module_size.py: `make lint` fails on a module over 400 lines; generated protocol code is exempt."""

from __future__ import annotations

from pathlib import Path

import module_size
import pytest


def write_lines(path: Path, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"x{i} = {i}\n" for i in range(count)))
    return path


def test_a_module_over_the_limit_fails_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_lines(tmp_path / "pkg" / "small.py", 400)
    big = write_lines(tmp_path / "pkg" / "sub" / "big.py", 401)
    write_lines(tmp_path / "pkg" / "csi_pb2.py", 5000)
    write_lines(tmp_path / "pkg" / "csi_pb2_grpc.py", 5000)

    assert module_size.oversized(module_size.modules([tmp_path])) == [(big, 401)]
    assert module_size.main([str(tmp_path)]) == 1
    assert f"{big}: 401 lines (limit 400)" in capsys.readouterr().err


def test_modules_at_the_limit_pass(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.py", 400)
    assert module_size.main([str(tmp_path)]) == 0
    assert module_size.main([str(tmp_path), "--limit", "399"]) == 1


def test_the_repository_is_within_the_limit() -> None:
    checked = module_size.modules(module_size.ROOT / name for name in module_size.CHECKED)
    assert {p.parent.name for p in checked} >= {"sscsi_driver", "sscsi_operator", "sscsi_provider", "hack"}
    assert module_size.oversized(checked) == []
