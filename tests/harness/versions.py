"""hack/versions.env for every test tier: the one reader (the Makefile includes it, hack/*.sh source it)."""

from __future__ import annotations

import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "hack" / "versions.env"


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
