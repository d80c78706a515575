"""hack/versions.env read from Python: the one reader (the Makefile includes the file, hack/*.sh source it).

hack/*.py import it directly (a script's own directory is on sys.path); the test tiers and the
benchmark have hack/ on their path (pytest's `pythonpath`, the Makefile's PYTHONPATH).
"""

from __future__ import annotations

import functools
from pathlib import Path

VERSIONS_FILE = Path(__file__).resolve().with_name("versions.env")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as make and sh read them: comments and blank lines skipped, quotes removed."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


@functools.cache
def versions() -> dict[str, str]:
    """The pinned versions and TOOLS_CACHE of this checkout (read once per process)."""
    return read_env_file(VERSIONS_FILE)


def kube_bin() -> Path:
    """Where hack/build-tools.sh puts kubectl, kube-apiserver, kubelet... of KUBE_VERSION."""
    pinned = versions()
    return Path(pinned["TOOLS_CACHE"]) / f"kube-{pinned['KUBE_VERSION']}" / "bin"


def tools_bin() -> Path:
    """Where hack/build-tools.sh puts the other tools (operator-sdk, opm, sidecars, csi-sanity...)."""
    return Path(versions()["TOOLS_CACHE"]) / "tools" / "bin"
