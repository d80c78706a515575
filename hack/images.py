#!/usr/bin/env python3
"""Build the real-node tier's images with no Docker engine and import them into containerd.

No registry is reachable and no image is ever pulled: every image is built here from local
inputs, written as an OCI image layout (uncompressed layers, so a layer's digest is its diff_id)
and imported with ``ctr -n k8s.io images import``.

Images (``names`` prints the exact references as JSON):

  pause        local/pause:3.10          /pause = Debian's static catatonit, entrypoint ``-P``
  busybox      local/busybox:1.35        Debian's busybox-static plus applet symlinks
  driver       local/sscsi-driver:<key>  images/driver.Dockerfile
  operator     local/sscsi-operator:<key> images/operator.Dockerfile
  provider     local/sscsi-provider:<key> images/provider.Dockerfile
  registrar    local/csi-node-driver-registrar:<key>   static Go binary in a one-file layer
  livenessprobe local/livenessprobe:<key>              static Go binary in a one-file layer

The project images are built by interpreting their Dockerfiles (FROM/ARG/ENV/LABEL/WORKDIR/COPY
[--from]/RUN/USER/ENTRYPOINT/CMD): each stage is an overlayfs on top of a base root filesystem,
RUN steps execute in a chroot of it, and the final stage's upper directory becomes the image's
second layer. The one substitution: ``FROM python:3.11-slim-bookworm`` is a Debian bookworm
rootfs made by ``debootstrap --variant=minbase --include=python3.11,python3-pip`` (Debian's
python3.11, the same distribution and minor version; Debian's EXTERNALLY-MANAGED marker is
removed, as the python images have none).

Caching: every image has a key, the SHA-256 of its inputs (the Dockerfile, the files its COPY
steps read, the base's key, the binaries packaged). A built layout is kept under
$TOOLS_CACHE/images/<name>-<key>.tar and reused while the key is unchanged; the import is skipped
when containerd already holds the same manifest. Layers are reproducible: sorted entries,
mtime 0, numeric root ownership, and SOURCE_DATE_EPOCH=0 for RUN steps (pip writes
hash-checked .pyc files).

Usage: hack/images.py {build|import|names} [NAME...]   (default: all images)
Environment: SSCSI_SNAPSHOTTER (overlayfs|native; default overlayfs), SSCSI_IMAGE_CACHE.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


VERSIONS = _versions()
TOOLS_CACHE = Path(VERSIONS.get("TOOLS_CACHE", "/var/cache/secrets-store-csi-py"))
CACHE = Path(os.environ.get("SSCSI_IMAGE_CACHE", TOOLS_CACHE / "images"))
CONTAINERD_SOCK = os.environ.get("SSCSI_CONTAINERD_SOCK", "/run/containerd/containerd.sock")
NAMESPACE = "k8s.io"
# Bump to invalidate every cached image when this builder's output format changes.
BUILDER_VERSION = "2"
# The python base's own recipe version (debootstrap takes ~2 minutes: not invalidated with the rest).
BASE_RECIPE_VERSION = "2"
BASE_IMAGE_SUBSTITUTES = {
    "docker.io/library/python:3.11-slim-bookworm": "debian-bookworm-python3.11",
}
DEBIAN_MIRROR = os.environ.get("SSCSI_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ["python3.11", "python3-pip"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(h: hashlib._Hash, root: Path, rel: str) -> None:
    """Feed a file or directory (names, modes, contents; no caches) into h."""
    p = root / rel
    if p.is_file():
        h.update(f"F {rel} {p.stat().st_mode & 0o777:o}\n".encode())
        h.update(sha256_file(p).encode())
        return
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".mypy_cache"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            fp = Path(dirpath) / name
            r = fp.relative_to(root).as_posix()
            if fp.is_symlink():
                h.update(f"L {r} {os.readlink(fp)}\n".encode())
            else:
                h.update(f"F {r} {fp.stat().st_mode & 0o777:o}\n".encode())
                h.update(sha256_file(fp).encode())


# --- layers -------------------------------------------------------------------------------


def _normalize(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.mtime = 0
    ti.uname = ""
    ti.gname = ""
    ti.pax_headers = {}
    return ti


def write_layer(
    src: Path, out: Path, *, overlay_upper: bool = False, skip_contents: tuple[str, ...] = ()
) -> None:
    """A reproducible uncompressed layer tar of directory src.

    overlay_upper: src is an overlayfs upper dir; whiteouts (0/0 char devices) and opaque
    directories become OCI .wh. entries. skip_contents: directories kept empty (dev, proc...).
    """
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = Path(dirpath).relative_to(src).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir in skip_contents:
            dirnames[:] = []
            continue
        # os.walk lists symlinks to directories in dirnames without descending into them.
        for name in dirnames + filenames:
            entries.append(f"{rel_dir}/{name}" if rel_dir else name)
    entries.sort()
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for rel in entries:
            full = src / rel
            st = full.lstat()
            if overlay_upper and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                parent, _, base = rel.rpartition("/")
                ti = tarfile.TarInfo(f"{parent}/.wh.{base}" if parent else f".wh.{base}")
                ti.mode = 0o644
                tar.addfile(_normalize(ti))
                continue
            ti = tar.gettarinfo(str(full), arcname=rel)
            _normalize(ti)
            if ti.isfile():
                with full.open("rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
            if overlay_upper and ti.isdir():
                with contextlib.suppress(OSError):
                    if os.getxattr(full, "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                        tar.addfile(_normalize(tarfile.TarInfo(f"{rel}/.wh..wh..opq")))


def normalized(ref: str) -> str:
    """The name CRI looks images up by: `local/busybox:1.35` is `docker.io/local/busybox:1.35`."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." in first or ":" in first or first == "localhost":
        return ref
    return f"docker.io/{ref}"


def write_oci_archive(
    out: Path, layers: list[Path], config: dict, ref: str, created: str = "1970-01-01T00:00:00Z"
) -> str:
    """Write an OCI image layout as a tar at out; returns the manifest digest."""
    blobs: dict[str, bytes | Path] = {}
    diff_ids = []
    layer_descs = []
    for layer in layers:
        d = "sha256:" + sha256_file(layer)
        blobs[d] = layer
        diff_ids.append(d)
        layer_descs.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": layer.stat().st_size}
        )
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": "hack/images.py"} for _ in layers],
    }
    cfg = json.dumps(image_config, sort_keys=True, separators=(",", ":")).encode()
    cfg_d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    blobs[cfg_d] = cfg
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cfg_d,
            "size": len(cfg),
        },
        "layers": layer_descs,
    }
    man = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    man_d = "sha256:" + hashlib.sha256(man).hexdigest()
    blobs[man_d] = man
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": man_d,
                "size": len(man),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": normalized(ref),
                    "org.opencontainers.image.ref.name": normalized(ref),
                },
            }
        ],
    }
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:

        def add_bytes(name: str, data: bytes) -> None:
            ti = _normalize(tarfile.TarInfo(name))
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index, sort_keys=True).encode())
        for d in sorted(blobs):
            src = blobs[d]
            name = "blobs/sha256/" + d.split(":", 1)[1]
            if isinstance(src, bytes):
                add_bytes(name, src)
            else:
                ti = _normalize(tarfile.TarInfo(name))
                ti.size = src.stat().st_size
                ti.mode = 0o644
                with src.open("rb") as f:
                    tar.addfile(ti, f)
    tmp.rename(out)
    return man_d


# --- image definitions ------------------------------------------------------------------------


@dataclass
class Built:
    name: str
    ref: str
    archive: Path
    manifest_digest: str


@dataclass
class Image:
    name: str
    repo: str
    fixed_tag: str | None = None
    deps: list[str] = field(default_factory=list)

    def key(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def ref(self) -> str:
        return f"{self.repo}:{self.fixed_tag or self.key()[:12]}"

    def archive(self) -> Path:
        return CACHE / f"{self.name}-{self.key()[:16]}.tar"

    def build_into(self, work: Path) -> tuple[list[Path], dict]:  # pragma: no cover - overridden
        raise NotImplementedError

    def build(self) -> Built:
        out = self.archive()
        digest_file = out.with_suffix(".digest")
        if out.exists() and digest_file.exists():
            return Built(self.name, self.ref(), out, digest_file.read_text().strip())
        CACHE.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        log(f"building {self.name} ({self.ref()})")
        with tempfile.TemporaryDirectory(dir=CACHE, prefix=f".build-{self.name}-") as tmp:
            layers, config = self.build_into(Path(tmp))
            digest = write_oci_archive(out, layers, config, self.ref())
        digest_file.write_text(digest + "\n")
        for old in CACHE.glob(f"{self.name}-*.tar"):
            if old != out:
                old.unlink(missing_ok=True)
                old.with_suffix(".digest").unlink(missing_ok=True)
        log(f"built {self.name} in {time.monotonic() - t0:.1f}s: {out.name} {digest[:19]}")
        return Built(self.name, self.ref(), out, digest)


def _which(binary: str, package: str) -> Path:
    p = shutil.which(binary, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if not p:
        raise SystemExit(f"{binary} not found: install the Debian package {package}")
    return Path(p).resolve()


class Pause(Image):
    def __init__(self) -> None:
        super().__init__("pause", "local/pause", fixed_tag="3.10")

    def key(self) -> str:
        return hashlib.sha256(
            f"{BUILDER_VERSION} pause {sha256_file(_which('catatonit', 'catatonit'))}".encode()
        ).hexdigest()

    def build_into(self, work: Path) -> tuple[list[Path], dict]:
        root = work / "rootfs"
        root.mkdir()
        shutil.copy2(_which("catatonit", "catatonit"), root / "pause")
        (root / "pause").chmod(0o755)
        layer = work / "layer.tar"
        write_layer(root, layer)
        return [layer], {"Entrypoint": ["/pause", "-P"], "User": "65535:65535"}


class Busybox(Image):
    def __init__(self) -> None:
        super().__init__("busybox", "local/busybox", fixed_tag="1.35")

    def key(self) -> str:
        return hashlib.sha256(
            f"{BUILDER_VERSION} busybox {sha256_file(_which('busybox', 'busybox-static'))}".encode()
        ).hexdigest()

    def build_into(self, work: Path) -> tuple[list[Path], dict]:
        bb = _which("busybox", "busybox-static")
        root = work / "rootfs"
        for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev", "var"):
            (root / d).mkdir(parents=True)
        (root / "tmp").chmod(0o1777)
        shutil.copy2(bb, root / "bin" / "busybox")
        applets = subprocess.run(
            [str(bb), "--list"], check=True, capture_output=True, text=True
        ).stdout.split()
        for applet in sorted(set(applets)):
            if applet != "busybox" and "/" not in applet:
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
        layer = work / "layer.tar"
        write_layer(root, layer)
        return [layer], {"Cmd": ["sh"], "Env": [f"PATH={DEFAULT_PATH}"]}


SIDECARS_SRC = REPO / "hack" / "node-sidecars"


def sidecar_binary(upstream: str, standin: str) -> Path:
    """The upstream sidecar when hack/build-tools.sh could build it, else our stand-in.

    The stand-ins (hack/node-sidecars) are built with the module cache the Kubernetes build
    filled (GOPROXY=off first, the proxy as a fallback), content-addressed by their sources.
    """
    up = TOOLS_CACHE / "tools" / "bin" / upstream
    if up.exists():
        return up.resolve()
    h = hashlib.sha256()
    hash_tree(h, SIDECARS_SRC.parent, SIDECARS_SRC.name)
    out = TOOLS_CACHE / "tools" / f"node-sidecars-{h.hexdigest()[:16]}"
    binary = out / standin
    if binary.exists():
        return binary
    log(
        f"building stand-in {standin} from {SIDECARS_SRC.relative_to(REPO)} (upstream {upstream} unavailable)"
    )
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    tmp = out.with_name(out.name + ".tmp")
    cmd = [
        "go",
        "build",
        "-trimpath",
        "-ldflags",
        "-s -w -buildid=",
        "-o",
        f"{tmp}/",
        "./registrar",
        "./livenessprobe",
    ]
    r = subprocess.run(cmd, cwd=SIDECARS_SRC, env={**env, "GOPROXY": "off", "GOSUMDB": "off"}, check=False)
    if r.returncode != 0:
        subprocess.run(cmd, cwd=SIDECARS_SRC, env=env, check=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return binary


class GoBinary(Image):
    """A static Go binary in a one-file layer (node-driver-registrar, livenessprobe)."""

    def __init__(self, name: str, repo: str, upstream: str, standin: str, in_image: str) -> None:
        super().__init__(name, repo)
        self.upstream = upstream
        self.standin = standin
        self.in_image = in_image
        self._binary: Path | None = None

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = sidecar_binary(self.upstream, self.standin)
        return self._binary

    def key(self) -> str:
        return hashlib.sha256(
            f"{BUILDER_VERSION} {self.name} {sha256_file(self.binary)}".encode()
        ).hexdigest()

    def build_into(self, work: Path) -> tuple[list[Path], dict]:
        root = work / "rootfs"
        (root / "tmp").mkdir(parents=True)
        (root / "tmp").chmod(0o1777)
        shutil.copy2(self.binary.resolve(), root / self.in_image.lstrip("/"))
        (root / self.in_image.lstrip("/")).chmod(0o755)
        layer = work / "layer.tar"
        write_layer(root, layer)
        return [layer], {"Entrypoint": [self.in_image]}


# --- the Debian python base -------------------------------------------------------------------


class PythonBase:
    """Stands in for python:3.11-slim-bookworm: a debootstrap'd bookworm with python3.11 + pip."""

    def __init__(self) -> None:
        self.dir = CACHE / "base" / self.key()[:16]
        self.rootfs = self.dir / "rootfs"
        self.layer = self.dir / "layer.tar"

    @staticmethod
    def key() -> str:
        recipe = (
            f"{BASE_RECIPE_VERSION} debootstrap minbase bookworm {' '.join(BASE_PACKAGES)} {DEBIAN_MIRROR}"
        )
        return hashlib.sha256(recipe.encode()).hexdigest()

    def ensure(self) -> None:
        if (self.dir / ".complete").exists():
            return
        if not shutil.which("debootstrap"):
            raise SystemExit("debootstrap not found: apt-get install debootstrap")
        log("debootstrap bookworm (minbase + python3.11 + python3-pip); about 2 minutes on a cold cache")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        t0 = time.monotonic()
        with (self.dir / "debootstrap.log").open("w") as logf:
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=" + ",".join(BASE_PACKAGES),
                    "bookworm",
                    str(self.rootfs),
                    DEBIAN_MIRROR,
                ],
                check=True,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        r = self.rootfs
        # What the slim python images do not carry either: package caches and lists, docs.
        for pattern in (
            "var/cache/apt/archives/*.deb",
            "var/lib/apt/lists/*",
            "var/log/*",
            "usr/share/doc/*",
            "usr/share/man/*",
            "usr/share/info/*",
            "var/cache/debconf/*-old",
            "root/.cache",
        ):
            for p in r.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
        # pip may install into the system interpreter, as in the python images.
        for marker in r.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        # Day-dependent content: the "last password change" day of every account.
        for f in ("etc/shadow", "etc/shadow-"):
            p = r / f
            if p.exists():
                lines = [ln.split(":") for ln in p.read_text().splitlines()]
                p.write_text("".join(":".join([*f[:2], "", *f[3:]]) + "\n" for f in lines if len(f) > 3))
        for f in ("var/cache/ldconfig/aux-cache",):
            (r / f).unlink(missing_ok=True)
        # Host-specific files debootstrap copied in.
        for f in ("etc/resolv.conf", "etc/hostname", "etc/machine-id"):
            p = r / f
            if p.exists() or p.is_symlink():
                p.unlink()
            if f != "etc/hostname":
                p.touch()
        write_layer(r, self.layer, skip_contents=("dev", "proc", "sys", "run", "tmp"))
        (self.dir / ".complete").write_text(sha256_file(self.layer) + "\n")
        for old in self.dir.parent.iterdir():
            if old != self.dir:
                shutil.rmtree(old, ignore_errors=True)
        log(f"python base ready in {time.monotonic() - t0:.0f}s ({self.layer.stat().st_size >> 20} MiB)")


# --- a Dockerfile interpreter ---------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    instructions: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, rest = buf.strip().partition(" ")
        instructions.append((op.upper(), rest.strip()))
        buf = ""
    return instructions


def expand(s: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), s)


def parse_kv(rest: str, env: dict[str, str]) -> dict[str, str]:
    out = {}
    for tok in shlex.split(rest):
        k, _, v = tok.partition("=")
        out[k] = expand(v, env)
    return out


@dataclass
class Stage:
    name: str
    dir: Path
    env: dict[str, str]
    args: dict[str, str]
    workdir: str = "/"
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None

    @property
    def merged(self) -> Path:
        return self.dir / "merged"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


class DockerfileImage(Image):
    def __init__(self, name: str, repo: str, dockerfile: Path) -> None:
        super().__init__(name, repo)
        self.dockerfile = dockerfile
        self.instructions = parse_dockerfile(dockerfile.read_text())
        self._key: str | None = None

    def context_sources(self) -> list[str]:
        srcs: set[str] = set()
        for op, rest in self.instructions:
            if op == "COPY" and not rest.startswith("--from"):
                parts = shlex.split(rest)
                srcs.update(p.rstrip("/") for p in parts[:-1] if not p.startswith("--"))
        return sorted(srcs)

    def key(self) -> str:
        if self._key is None:
            h = hashlib.sha256(f"{BUILDER_VERSION} {self.name} base={PythonBase.key()}\n".encode())
            h.update(self.dockerfile.read_bytes())
            for src in self.context_sources():
                hash_tree(h, REPO, src)
            self._key = h.hexdigest()
        return self._key

    def build_into(self, work: Path) -> tuple[list[Path], dict]:
        base = PythonBase()
        base.ensure()
        mounted: list[Path] = []
        stages: dict[str, Stage] = {}
        global_args: dict[str, str] = {}
        stage: Stage | None = None
        try:
            for op, rest in self.instructions:
                if op == "ARG" and stage is None:
                    global_args.update(parse_kv(rest, global_args))
                elif op == "FROM":
                    parts = rest.split()
                    image = expand(parts[0], global_args)
                    name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
                    if image not in BASE_IMAGE_SUBSTITUTES:
                        raise SystemExit(f"{self.dockerfile}: unsupported base image {image}")
                    sdir = work / f"stage-{name}"
                    for d in ("upper", "work", "merged"):
                        (sdir / d).mkdir(parents=True)
                    _mount(
                        "-t",
                        "overlay",
                        "overlay",
                        "-o",
                        f"lowerdir={base.rootfs},upperdir={sdir / 'upper'},workdir={sdir / 'work'}",
                        str(sdir / "merged"),
                    )
                    mounted.append(sdir / "merged")
                    stage = Stage(name, sdir, env={"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}, args={})
                    stages[name] = stage
                elif stage is None:
                    raise SystemExit(f"{self.dockerfile}: {op} before FROM")
                elif op == "ARG":
                    for k, v in parse_kv(rest, {**global_args, **stage.env}).items():
                        stage.args[k] = v or global_args.get(k, "")
                elif op == "ENV":
                    stage.env.update(parse_kv(rest, {**stage.args, **stage.env}))
                elif op == "LABEL":
                    stage.labels.update(parse_kv(rest, {**stage.args, **stage.env}))
                elif op == "WORKDIR":
                    stage.workdir = os.path.join(stage.workdir, expand(rest, stage.env))
                    (stage.merged / stage.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
                elif op == "USER":
                    stage.user = expand(rest, {**stage.args, **stage.env})
                elif op in ("ENTRYPOINT", "CMD"):
                    value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
                    if op == "ENTRYPOINT":
                        stage.entrypoint = value
                    else:
                        stage.cmd = value
                elif op == "COPY":
                    self._copy(stage, stages, rest)
                elif op == "RUN":
                    self._run(stage, rest)
                else:
                    raise SystemExit(f"{self.dockerfile}: unsupported instruction {op}")
            assert stage is not None
            for m in reversed(mounted):
                _umount(m)
            mounted.clear()
            layer = work / "layer.tar"
            write_layer(stage.upper, layer, overlay_upper=True)
            config: dict = {
                "Env": [f"{k}={v}" for k, v in stage.env.items()],
                "Labels": stage.labels,
                "WorkingDir": stage.workdir,
            }
            if stage.user:
                config["User"] = stage.user
            if stage.entrypoint is not None:
                config["Entrypoint"] = stage.entrypoint
            if stage.cmd is not None:
                config["Cmd"] = stage.cmd
            return [base.layer, layer], config
        finally:
            for m in reversed(mounted):
                _umount(m)

    def _copy(self, stage: Stage, stages: dict[str, Stage], rest: str) -> None:
        parts = shlex.split(rest)
        src_root = REPO
        if parts[0].startswith("--from="):
            src_root = stages[parts[0].split("=", 1)[1]].merged
            parts = parts[1:]
        *srcs, dest = parts
        dest_abs = dest if dest.startswith("/") else os.path.join(stage.workdir, dest)
        for src in srcs:
            sp = src_root / src.lstrip("/")
            target = stage.merged / dest_abs.lstrip("/")
            if sp.is_dir():
                # Docker copies a directory's contents into dest.
                shutil.copytree(
                    sp,
                    target,
                    symlinks=True,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                if dest.endswith("/") or len(srcs) > 1:
                    target.mkdir(parents=True, exist_ok=True)
                    target = target / sp.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(sp, target)
        for dirpath, _dirs, files in os.walk(stage.merged / dest_abs.lstrip("/")):
            os.chown(dirpath, 0, 0)
            for f in files:
                os.chown(os.path.join(dirpath, f), 0, 0, follow_symlinks=False)

    def _run(self, stage: Stage, command: str) -> None:
        m = stage.merged
        binds: list[Path] = []
        try:
            for src, dst in (("/proc", "proc"), ("/dev", "dev"), ("/sys", "sys")):
                _mount("--rbind", src, str(m / dst))
                subprocess.run(["mount", "--make-rslave", str(m / dst)], check=True)
                binds.append(m / dst)
            # Network access for build stages (pip wheel): the host's resolver and CA bundle.
            for f in ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"):
                target = m / f.lstrip("/")
                if Path(f).exists() and target.exists():
                    _mount("--bind", "-o", "ro", f, str(target))
                    binds.append(target)
            env = {"HOME": "/root", "SOURCE_DATE_EPOCH": "0", **stage.args, **stage.env}
            for k in ("PIP_DEFAULT_TIMEOUT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
                if k in os.environ:
                    env[k] = os.environ[k]
            if "PIP_CERT" in os.environ:
                env["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
            log(f"  RUN {command}")
            subprocess.run(
                ["chroot", str(m), "/bin/sh", "-c", f"cd {shlex.quote(stage.workdir)} && {command}"],
                check=True,
                env=env,
                stdout=sys.stderr,
            )
        finally:
            for b in reversed(binds):
                _umount(b)


def all_images() -> dict[str, Image]:
    imgs: list[Image] = [
        Pause(),
        Busybox(),
        DockerfileImage("driver", "local/sscsi-driver", REPO / "images" / "driver.Dockerfile"),
        DockerfileImage("operator", "local/sscsi-operator", REPO / "images" / "operator.Dockerfile"),
        DockerfileImage("provider", "local/sscsi-provider", REPO / "images" / "provider.Dockerfile"),
        GoBinary(
            "registrar",
            "local/csi-node-driver-registrar",
            "csi-node-driver-registrar",
            "registrar",
            "/csi-node-driver-registrar",
        ),
        GoBinary("livenessprobe", "local/livenessprobe", "livenessprobe", "livenessprobe", "/livenessprobe"),
    ]
    return {i.name: i for i in imgs}


# --- containerd -------------------------------------------------------------------------------


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", CONTAINERD_SOCK, "-n", NAMESPACE, *args],
        check=check,
        capture_output=True,
        text=True,
    )


def imported_digest(ref: str) -> str | None:
    out = ctr("images", "ls", f"name=={ref}", check=False).stdout.splitlines()
    for line in out[1:]:
        cols = line.split()
        if cols and cols[0] == ref:
            return cols[2]
    return None


def import_image(b: Built) -> None:
    if imported_digest(normalized(b.ref)) == b.manifest_digest:
        return
    snapshotter = os.environ.get("SSCSI_SNAPSHOTTER", "overlayfs")
    t0 = time.monotonic()
    r = ctr("images", "import", "--snapshotter", snapshotter, str(b.archive), check=False)
    if r.returncode != 0:
        raise SystemExit(f"ctr import {b.archive} failed: {r.stderr.strip()}")
    got = imported_digest(normalized(b.ref))
    if got != b.manifest_digest:
        raise SystemExit(f"{b.ref}: imported digest {got}, expected {b.manifest_digest}")
    log(f"imported {b.ref} in {time.monotonic() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["build", "import", "names"])
    p.add_argument("images", nargs="*")
    a = p.parse_args(argv)
    images = all_images()
    names = a.images or list(images)
    unknown = [n for n in names if n not in images]
    if unknown:
        p.error(f"unknown images {unknown}; known: {list(images)}")
    if a.command == "names":
        print(json.dumps({n: images[n].ref() for n in names}, indent=2))
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        # One builder at a time per cache (node-up and the tests both call this).
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = [images[n].build() for n in names]
    if a.command == "import":
        for b in built:
            import_image(b)
    print(json.dumps({b.name: b.ref for b in built}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
