"""Count test functions and assert statements per test tier (issue #13: "not lower" after a move).

    .venv/bin/python tests/count_tests.py [--json]

A tier is a directory under tests/ (unit, e2e, node, olm, bench, harness). Test functions are
module-level or `Test*`-class functions named `test*`; asserts are `assert` statements anywhere in
the tier's .py files (helpers included, so moving a helper between files changes nothing).
`pytest.raises` blocks are counted apart: they assert too, but are not `assert` statements.
"""

from __future__ import annotations

import argparse
import ast
import json
from dataclasses import asdict, dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent


@dataclass
class Counts:
    files: int = 0
    test_functions: int = 0
    asserts: int = 0
    raises: int = 0


def _is_test(node: ast.AST) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")


def _test_functions(tree: ast.Module) -> int:
    count = 0
    for node in tree.body:
        if _is_test(node):
            count += 1
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            count += sum(1 for item in node.body if _is_test(item))
    return count


def _is_raises(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "raises"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pytest"
    )


def count_tier(tier: Path) -> Counts:
    counts = Counts()
    for path in sorted(tier.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        counts.files += 1
        if path.name.startswith("test_"):
            counts.test_functions += _test_functions(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert):
                counts.asserts += 1
            elif _is_raises(node):
                counts.raises += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    tiers = {
        d.name: count_tier(d)
        for d in sorted(TESTS.iterdir())
        if d.is_dir() and not d.name.startswith((".", "_"))
    }
    if args.json:
        print(json.dumps({name: asdict(c) for name, c in tiers.items()}, indent=2))
        return
    print(f"{'tier':<10}{'files':>7}{'tests':>7}{'asserts':>9}{'raises':>8}")
    for name, c in tiers.items():
        print(f"{name:<10}{c.files:>7}{c.test_functions:>7}{c.asserts:>9}{c.raises:>8}")


if __name__ == "__main__":
    main()
