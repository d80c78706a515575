#!/usr/bin/env python3
"""Make the OLM bundle and the file-based catalog with the ecosystem's tools (`make bundle`).

    kubectl kustomize config/manifests (+ a per-version overlay) | operator-sdk generate bundle
    opm init + opm render (+ the other versions of an existing catalog) -> opm validate
    opm generate dockerfile

Interface (with no option it regenerates the committed bundle/, bundle.Dockerfile, catalog/,
catalog.Dockerfile and dist/install.yaml (the same objects for `kubectl apply`, no OLM); every
option below only changes what that same pipeline is given):

    hack/bundle.py [--version V] [--registry R] [--image-tag T] [--image NAME=REF]...
                   [--replaces V0] [--channels C1,C2] [--default-channel C]
                   [--previous-catalog DIR | --no-previous-catalog] [--out DIR] [--check]

  --version V            bundle version; the CSV is secrets-store-csi-py.vV
                         (default: the version in pyproject.toml)
  --registry R           registry + path of the operator, driver and bundle images
                         (default ghcr.io/secrets-store-csi-py: R/operator, R/driver, R/operator-bundle)
  --image-tag T          their tag (default vV)
  --image NAME=REF       one image exactly, NAME one of: operator, driver, livenessprobe, bundle
                         (the livenessprobe sidecar defaults to config/manager's reference)
  --replaces V0          the version this one upgrades from: the CSV's spec.replaces and the channel
                         entries' `replaces` (default: the newest older version in the previous catalog)
  --channels, --default-channel   (default stable,candidate and stable)
  --previous-catalog DIR a catalog directory whose other versions are kept next to this one
                         (default: the committed catalog/, so releases accumulate)
  --no-previous-catalog  a catalog with this version only
  --out DIR              where to write bundle/, bundle.Dockerfile, catalog/, catalog.Dockerfile
                         (default: the repository root)
  --check                write nothing; exit 1 when the files in --out differ from a fresh run

Every version's entry carries skipRange '>=0.0.0 <V' (any older version upgrades straight to it).
Example, the next release into a scratch directory, its catalog holding 0.1.0 and 0.2.0:

    hack/bundle.py --version 0.2.0 --replaces 0.1.0 --registry localhost:5000/sscsi --out /tmp/v2

Tools: kubectl (kustomize), operator-sdk and opm, from PATH or $KUBECTL / $OPERATOR_SDK / $OPM
(`make bundle` puts the pinned builds of hack/build-tools.sh first on PATH).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bundle_generate import Tools, build, differences, fail, install, log
from bundle_release import (
    IMAGE_NAMES,
    REGISTRY,
    ROOT,
    Previous,
    Release,
    csv_name,
    images_for,
    pyproject_version,
    semver_key,
)

__all__ = ["REGISTRY", "Tools", "main", "semver_key"]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Make the OLM bundle and catalog (see the module docstring)."
    )
    parser.add_argument("--version", default=None)
    parser.add_argument("--registry", default=REGISTRY)
    parser.add_argument("--image-tag", default=None)
    parser.add_argument("--image", action="append", default=[], metavar="NAME=REF")
    parser.add_argument("--replaces", default=None, metavar="VERSION")
    parser.add_argument("--channels", default="stable,candidate")
    parser.add_argument("--default-channel", default="stable")
    parser.add_argument("--previous-catalog", type=Path, default=ROOT / "catalog")
    parser.add_argument("--no-previous-catalog", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT)
    parser.add_argument("--check", action="store_true")
    return parser.parse_args(argv)


def release_from(opts: argparse.Namespace, previous: Previous) -> Release:
    version = opts.version or pyproject_version()
    overrides = dict(item.split("=", 1) for item in opts.image)
    unknown = set(overrides) - set(IMAGE_NAMES)
    if unknown:
        raise fail(f"--image: unknown {sorted(unknown)}; known: {', '.join(IMAGE_NAMES)}")
    replaces = opts.replaces or previous.newest_before(version)
    if opts.replaces and csv_name(opts.replaces) not in previous.versions():
        raise fail(f"--replaces {opts.replaces}: no such version in the previous catalog")
    if replaces and semver_key(replaces) >= semver_key(version):
        raise fail(f"--replaces {replaces} is not older than {version}")
    channels = tuple(c for c in opts.channels.split(",") if c)
    if opts.default_channel not in channels:
        raise fail(f"--default-channel {opts.default_channel} is not one of --channels {channels}")
    return Release(
        version=version,
        images=images_for(version, opts.registry, opts.image_tag, overrides),
        channels=channels,
        default_channel=opts.default_channel,
        replaces=replaces,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    version = opts.version or pyproject_version()
    catalog_dir = None if opts.no_previous_catalog else opts.previous_catalog.resolve()
    previous = Previous.load(catalog_dir, exclude=csv_name(version))
    release = release_from(opts, previous)
    tools = Tools.find()
    with tempfile.TemporaryDirectory(prefix="sscsi-bundle-") as tmp:
        fresh = Path(tmp)
        build(tools, release, previous, fresh)
        problems = differences(fresh, opts.out)
        if opts.check:
            if problems:
                print("bundle/catalog are stale; run `make bundle`:", *problems, sep="\n  ", file=sys.stderr)
                return 1
            log(f"{opts.out}: bundle and catalog are up to date")
            return 0
        opts.out.mkdir(parents=True, exist_ok=True)
        install(fresh, opts.out)
    for line in problems or ["no change"]:
        log(line)
    log(f"{csv_name(release.version)} -> {opts.out}/bundle, {opts.out}/catalog")
    return 0


if __name__ == "__main__":
    sys.exit(main())
