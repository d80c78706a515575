"""Packaging follows the layers: each part's wheel declares what it imports and nothing of the others.

The wheels are built offline (`pip wheel --no-deps --no-build-isolation`, the dev environment's
setuptools) and read back: their Requires-Dist is what pip would install. Third-party requirements
are followed through the metadata of the dev environment, where every one of them is installed.
"""

from __future__ import annotations

import ast
import email
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
META = "secrets-store-csi-py"
PARTS = ("kube", "proto", "driver", "provider", "operator", "cli")
OURS = {canonicalize_name(f"{META}-{part}"): part for part in PARTS}
OPERATOR_ONLY = {"kopf", "jinja2"}
GRPC = {"grpcio", "protobuf"}


@dataclass(frozen=True)
class Wheel:
    name: str
    requires: tuple[str, ...]
    requires_python: str
    top_level: frozenset[str]
    scripts: frozenset[str]


def _read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        message = email.message_from_bytes(archive.read(meta_name))
        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = (
            re.findall(r"^(\S+) = ", archive.read(entry_points[0]).decode(), re.M) if entry_points else []
        )
    return Wheel(
        name=canonicalize_name(message["Name"]),
        requires=tuple(message.get_all("Requires-Dist") or ()),
        requires_python=message["Requires-Python"],
        top_level=frozenset(n.split("/")[0] for n in names if ".dist-info/" not in n),
        scripts=frozenset(scripts),
    )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    """name -> wheel, built from copies of the sources (the working tree gets no build/ dirs)."""
    work = tmp_path_factory.mktemp("wheels")
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*")
    sources = []
    for part in PARTS:
        shutil.copytree(ROOT / part, work / "src" / part, ignore=skip)
        sources.append(work / "src" / part)
    (work / "src" / "meta").mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, work / "src" / "meta" / name)
    sources.append(work / "src" / "meta")
    out = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out)]
        + [str(s) for s in sources],
        check=True,
        capture_output=True,
    )
    found = {w.name: w for w in map(_read_wheel, out.glob("*.whl"))}
    assert set(found) == {META, *OURS}
    return found


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": e}) for e in extras or {""})


def closure(wheels: dict[str, Wheel], name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution pip installs for `name[extras]` (markers evaluated for this interpreter)."""
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(canonicalize_name(name), set(extras))]
    while todo:
        current, wanted = todo.pop()
        if current in wheels:
            requires: list[str] = list(wheels[current].requires)
        else:
            requires = metadata.distribution(current).requires or []
        for requirement in map(Requirement, requires):
            target = canonicalize_name(requirement.name)
            if _applies(requirement, wanted) and target not in seen:
                seen.add(target)
                todo.append((target, set(requirement.extras)))
    return seen


def test_the_closure_follows_our_parts_and_their_third_party_requirements(wheels: dict[str, Wheel]) -> None:
    """The reading the other tests rely on: operator -> kube -> pyyaml, operator -> kopf -> aiohttp."""
    installed = closure(wheels, META, frozenset({"operator"}))
    assert {
        "secrets-store-csi-py-operator",
        "secrets-store-csi-py-kube",
        "pyyaml",
        "kopf",
        "aiohttp",
    } <= installed
    assert {"grpcio", "protobuf"} <= closure(wheels, META, frozenset({"driver"}))


def test_no_part_installs_an_http_or_kubernetes_client_library(wheels: dict[str, Wheel]) -> None:
    """sscsi_kube speaks HTTP/1.1 itself (README "Choices worth knowing": CPU per request and RSS)."""
    for extra in ("driver", "cli"):
        installed = closure(wheels, META, frozenset({extra}))
        assert installed.isdisjoint({"lightkube", "httpx", "httpx2", "httpcore2", "anyio", "kubernetes"}), (
            extra
        )


@pytest.mark.parametrize(
    ("extra", "forbidden"),
    [
        (
            "cli",
            GRPC
            | OPERATOR_ONLY
            | {"prometheus-client", *OURS} - {"secrets-store-csi-py-cli", "secrets-store-csi-py-kube"},
        ),
        (
            "driver",
            OPERATOR_ONLY
            | {"secrets-store-csi-py-provider", "secrets-store-csi-py-operator", "secrets-store-csi-py-cli"},
        ),
        (
            "provider",
            OPERATOR_ONLY | {"secrets-store-csi-py-kube", "secrets-store-csi-py-driver"},
        ),
        (
            "operator",
            GRPC | {"prometheus-client", "secrets-store-csi-py-driver", "secrets-store-csi-py-provider"},
        ),
    ],
)
def test_an_extra_installs_its_part_and_none_of_the_others(
    wheels: dict[str, Wheel], extra: str, forbidden: set[str]
) -> None:
    installed = closure(wheels, META, frozenset({extra}))
    assert f"secrets-store-csi-py-{extra}" in installed
    assert installed.isdisjoint(forbidden), sorted(installed & forbidden)


def test_the_meta_package_has_no_code_and_no_dependency_without_an_extra(wheels: dict[str, Wheel]) -> None:
    assert closure(wheels, META) == set()
    assert wheels[META].top_level == frozenset()


@pytest.mark.parametrize("part", PARTS)
def test_each_wheel_holds_its_own_package_and_no_upper_python_bound(
    wheels: dict[str, Wheel], part: str
) -> None:
    wheel = wheels[f"secrets-store-csi-py-{part}"]
    assert wheel.top_level <= {f"sscsi_{part}"}
    assert wheel.requires_python == ">=3.11"
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    pins = [Requirement(r) for r in wheel.requires if canonicalize_name(Requirement(r).name) in OURS]
    assert all(str(p.specifier) == f"=={version}" for p in pins)


def test_console_scripts_come_with_their_part(wheels: dict[str, Wheel]) -> None:
    assert wheels["secrets-store-csi-py-driver"].scripts == {"secrets-store-csi-driver"}
    assert wheels["secrets-store-csi-py-provider"].scripts == {"secrets-store-csi-e2e-provider"}
    assert wheels["secrets-store-csi-py-operator"].scripts == {"secrets-store-csi-operator"}
    assert wheels["secrets-store-csi-py-cli"].scripts == {"kubectl-secrets_store"}


def _imported_top_levels(package_dir: Path) -> Iterator[str]:
    for source in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                yield from (alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                yield node.module.split(".")[0]


@pytest.mark.parametrize("part", PARTS)
def test_every_import_of_a_part_is_declared_by_it(wheels: dict[str, Wheel], part: str) -> None:
    """A part imports only the stdlib, itself and what its own requirements install."""
    package = ROOT / part / f"sscsi_{part}"
    if not package.is_dir():
        pytest.skip(f"{package} is not there yet")
    provides = metadata.packages_distributions()
    installed = closure(wheels, f"secrets-store-csi-py-{part}") | {f"secrets-store-csi-py-{part}"}
    importable = {f"sscsi_{OURS[name]}" for name in installed if name in OURS}
    for name in installed - set(OURS):
        importable |= {top for top, dists in provides.items() if name in map(canonicalize_name, dists)}
    undeclared = set(_imported_top_levels(package)) - set(sys.stdlib_module_names) - importable
    assert not undeclared, f"{part} imports {sorted(undeclared)} without declaring them"
