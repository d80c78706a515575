#!/usr/bin/env python3
"""`make lint`: no Python module over the line limit in the layer directories and hack/.

Generated protocol code (*_pb2*.py) is exempt. Prints each module over the limit and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 400
CHECKED = ("driver", "operator", "provider", "proto", "kube", "cli", "hack", "tests/bench")


def modules(roots: Iterable[Path]) -> list[Path]:
    """The Python modules under `roots`, generated protocol code left out."""
    found: list[Path] = []
    for root in roots:
        if root.is_file():
            found.append(root)
        elif root.is_dir():
            found += [p for p in root.rglob("*.py") if "_pb2" not in p.name and "build" not in p.parts]
    return sorted(found)


def oversized(paths: Iterable[Path], limit: int = LIMIT) -> list[tuple[Path, int]]:
    """(module, line count) for every module longer than `limit` lines."""
    counted = ((path, len(path.read_text().splitlines())) for path in paths)
    return [(path, lines) for path, lines in counted if lines > limit]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("paths", nargs="*", type=Path, help=f"default: {' '.join(CHECKED)}")
    parser.add_argument("--limit", type=int, default=LIMIT)
    opts = parser.parse_args(argv)
    roots: list[Path] = opts.paths or [ROOT / name for name in CHECKED]
    over = oversized(modules(roots), opts.limit)
    for path, lines in over:
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"{shown}: {lines} lines (limit {opts.limit}): split it by concern", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
