"""The next release, made by the project's own bundle pipeline, and a reader that measures staleness.

`next_release` runs hack/bundle.py for version N+1 (replaces N) into a scratch directory: its
catalog holds both versions. The bundle and catalog images are built from that directory's
Dockerfiles with buildah in hack/images.sh's storage and pushed under their public names; the
operator and driver images of N+1 are N's images under the N+1 tags (same bits, new references: the
operator's Deployment and the driver's DaemonSet still roll, which is what the upgrade exercises).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from node.nodekit import HACK, VERSIONS, KubectlError
from olmkit import REGISTRY, App, retag_in_registry, run

STORAGE = [
    f"--root={VERSIONS['TOOLS_CACHE']}/containers/storage",
    "--runroot=/run/sscsi-containers",
    "--storage-driver=vfs",
]
PUBLIC = "ghcr.io/secrets-store-csi-py"
# hack/bundle.py finds kubectl, operator-sdk and opm on PATH (as `make bundle` sets it).
TOOLS = VERSIONS["TOOLS_CACHE"]
TOOLS_PATH = f"{TOOLS}/tools/bin:{TOOLS}/kube-{VERSIONS['KUBE_VERSION']}/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def next_version(version: str) -> str:
    major, minor, _patch = (int(x) for x in version.split(".")[:3])
    return f"{major}.{minor + 1}.0"


def _build_push(context: Path, dockerfile: str, ref: str) -> None:
    run(
        [
            "buildah",
            *STORAGE,
            "bud",
            "--quiet",
            "--isolation=chroot",
            "--pull=never",
            "--format=oci",
            "--timestamp=0",
            f"--tag={ref}",
            f"--file={context / dockerfile}",
            str(context),
        ],
        f"buildah bud {dockerfile}",
        600,
    )
    dest = f"docker://{REGISTRY}/{ref.split('/', 1)[1]}"
    run(["buildah", *STORAGE, "push", "--quiet", "--tls-verify=false", ref, dest], f"buildah push {ref}", 300)


def next_release(version: str, out: Path) -> str:
    """Build and push release `next_version(version)`; return its catalog image reference."""
    new = next_version(version)
    run(
        [
            str(HACK.parent / ".venv" / "bin" / "python"),
            str(HACK / "bundle.py"),
            "--version",
            new,
            "--replaces",
            version,
            "--out",
            str(out),
        ],
        "hack/bundle.py (next release)",
        600,
        env={"PATH": TOOLS_PATH},
    )
    for image in ("operator", "driver"):
        retag_in_registry(f"{PUBLIC}/{image}:v{version}", f"{PUBLIC}/{image}:v{new}")
    _build_push(out, "bundle.Dockerfile", f"{PUBLIC}/operator-bundle:v{new}")
    catalog = f"{PUBLIC}/operator-catalog:v{new}"
    _build_push(out, "catalog.Dockerfile", catalog)
    return catalog


@dataclass
class Reader:
    """Reads the app's file every `interval` seconds in the background; records failures and values."""

    app: App
    interval: float = 0.5
    samples: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Reader:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                value: str | None = self.app.read()
            except (KubectlError, OSError):
                value = None
            self.samples.append((time.monotonic(), value))
            self._stop.wait(self.interval)

    def failures(self) -> list[float]:
        return [t for t, v in self.samples if v is None]

    def first_time(self, value: str, after: float) -> float | None:
        return next((t for t, v in self.samples if t >= after and v == value), None)
