#!/usr/bin/env python3
"""Generate Python code and typing stubs for proto/sscsi_proto/*.proto.

With --check, generate into a temporary directory and fail when the committed
files differ (keeps generated code honest without a build step at install).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent / "proto"
PKG = "sscsi_proto"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / PKG).glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_names(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*_pb2*.py*")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = out / PKG
        if opts.check:
            committed = ROOT / PKG
            names = generated_names(fresh)
            stale = sorted(
                n for n in names if not (committed / n).exists() or not filecmp.cmp(fresh / n, committed / n)
            )
            extra = sorted(generated_names(committed) - names)
            if stale or extra:
                print(f"generated protocol code is stale: {stale + extra}; run `make proto`", file=sys.stderr)
                return 1
            return 0
        for name in generated_names(fresh):
            shutil.copyfile(fresh / name, ROOT / PKG / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
