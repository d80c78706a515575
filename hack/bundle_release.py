"""The release `make bundle` describes: version, images, channels and the previous catalog's entries.

Pure: reads config/manager and a catalog directory, runs no tool (hack/bundle_generate.py does).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "secrets-store-csi-py"
REGISTRY = "ghcr.io/secrets-store-csi-py"
CONFIG = ROOT / "config"
MANAGER = CONFIG / "manager" / "manager.yaml"
# --image NAME -> the RELATED_IMAGE_* variable of config/manager that carries it.
RELATED_ENV = {
    "driver": "RELATED_IMAGE_DRIVER",
    "livenessprobe": "RELATED_IMAGE_LIVENESSPROBE",
}
IMAGE_NAMES = ("operator", "bundle", *RELATED_ENV)

Obj = dict[str, Any]


def pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def semver_key(version: str) -> tuple[tuple[int, ...], bool, str]:
    """Order semantic versions: numerically, a pre-release before its release."""
    core, _, pre = version.partition("+")[0].partition("-")
    return tuple(int(part) for part in core.split(".")), pre == "", pre


def csv_name(version: str) -> str:
    return f"{PACKAGE}.v{version}"


def skip_range(version: str) -> str:
    return f">=0.0.0 <{version}"


@dataclass(frozen=True)
class Release:
    """What one run builds: the version, its images and where it sits in the channels."""

    version: str
    images: Mapping[str, str]
    channels: tuple[str, ...]
    default_channel: str
    replaces: str | None


def manager_env() -> dict[str, str]:
    """config/manager's literal environment values (the sidecar images' defaults)."""
    deployment = yaml.safe_load(MANAGER.read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def images_for(version: str, registry: str, tag: str | None, overrides: Mapping[str, str]) -> dict[str, str]:
    tag = tag or f"v{version}"
    env = manager_env()
    images = {
        "operator": f"{registry}/operator:{tag}",
        "driver": f"{registry}/driver:{tag}",
        "bundle": f"{registry}/operator-bundle:{tag}",
        "livenessprobe": env[RELATED_ENV["livenessprobe"]],
    }
    return images | dict(overrides)


@dataclass(frozen=True)
class Previous:
    """The other versions of an existing catalog: their bundles and channel entries."""

    bundles: list[Obj]
    entries: dict[str, list[Obj]]

    @classmethod
    def load(cls, catalog_dir: Path | None, exclude: str) -> Previous:
        docs: list[Obj] = []
        if catalog_dir is not None and catalog_dir.is_dir():
            for path in sorted(catalog_dir.rglob("*.yaml")):
                docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
        mine = [d for d in docs if d.get("package") == PACKAGE or d.get("name") == PACKAGE]
        bundles = [d for d in mine if d.get("schema") == "olm.bundle" and d.get("name") != exclude]
        entries = {
            d["name"]: [e for e in d.get("entries") or [] if e.get("name") != exclude]
            for d in mine
            if d.get("schema") == "olm.channel"
        }
        return cls(bundles, entries)

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for bundle in self.bundles:
            for prop in bundle.get("properties") or []:
                if prop.get("type") == "olm.package":
                    out[bundle["name"]] = str(prop["value"]["version"])
        return out

    def newest_before(self, version: str) -> str | None:
        older = [v for v in self.versions().values() if semver_key(v) < semver_key(version)]
        return max(older, key=semver_key) if older else None


def channel_docs(release: Release, previous: Previous) -> list[Obj]:
    """One olm.channel per channel: the previous entries plus this version's, oldest first."""
    name = csv_name(release.version)
    versions = previous.versions() | {name: release.version}
    entry: Obj = {"name": name, "skipRange": skip_range(release.version)}
    if release.replaces:
        entry["replaces"] = csv_name(release.replaces)
    docs: list[Obj] = []
    for channel in sorted(set(release.channels) | set(previous.entries)):
        entries = list(previous.entries.get(channel, []))
        if channel in release.channels:
            entries.append(entry)
        entries.sort(key=lambda e: semver_key(versions[e["name"]]))
        docs.append({"schema": "olm.channel", "package": PACKAGE, "name": channel, "entries": entries})
    return docs
