#!/usr/bin/env bash
# The project's container images, built with buildah from the Dockerfiles users build with
# docker/podman, and handed to containerd or a registry with the ordinary tools.
#
#   hack/images.sh build  [NAME...]   buildah bud (cached: rebuilt only when an input changed)
#   hack/images.sh import [NAME...]   build, then into the node's containerd (namespace k8s.io) via an
#                                     oci-archive (skopeo, layers kept uncompressed: containerd gets
#                                     buildah's manifest digest) and `ctr images import`; skipped when
#                                     containerd already holds that digest
#   hack/images.sh push   [NAME...]   build, then `buildah push` to $SSCSI_REGISTRY (plain http), as
#                                     $SSCSI_REGISTRY/<path of the public name>:<tag> (both tags below)
#   hack/images.sh names  [NAME...]   JSON {name: reference}: the references tests should use
#   hack/images.sh digests [NAME...]  JSON {name: manifest digest} (built images only)
#   hack/images.sh reproduce [NAME...] build each image twice, each time into an empty temporary
#                                     storage (no cache at all: the bases are rebuilt, the Python
#                                     base from its cached root filesystem), from one frozen copy of
#                                     the inputs; compare manifest digests, exit 1 on any difference
#   hack/images.sh ensure-tools       install the Debian packages the builds need
# NAME: pause busybox driver operator provider livenessprobe upstream-provider bundle catalog
# (default: every image the node tier runs, i.e. all but bundle and catalog). stdout: JSON (names,
# digests; build/import/push print the references as `names` does). Progress: stderr.
#
# Stable interface (tests/node, the OLM tier's registry): the NAMEs, the JSON shapes, SSCSI_REGISTRY.
# Each image has its public reference (what the bundle's CSV, the operator's defaults and a user's
# `docker build -t` use) and, for the images made from this repository (driver operator provider
# bundle catalog), a second tag `<version>-<input key>` that changes whenever an input does, so a
# test that passes it makes kubelet run exactly this build. `names` prints that second reference for
# those images and the public one for the others (their tags are upstream releases).
#
#   image              public reference                                           Dockerfile
#   pause              registry.k8s.io/pause:3.10                                 images/pause.Dockerfile
#   busybox            docker.io/library/busybox:1.35                             images/busybox.Dockerfile
#   driver             ghcr.io/secrets-store-csi-py/driver:v<version>             images/driver.Dockerfile
#   operator           ghcr.io/secrets-store-csi-py/operator:v<version>           images/operator.Dockerfile
#   provider           ghcr.io/secrets-store-csi-py/e2e-provider:v<version>       images/provider.Dockerfile
#   livenessprobe      registry.k8s.io/sig-storage/livenessprobe:<v>              images/livenessprobe.Dockerfile
#   upstream-provider  gcr.io/k8s-staging-csi-secrets-store/e2e-provider:<v>      images/upstream-e2e-provider.Dockerfile
#   bundle             ghcr.io/secrets-store-csi-py/operator-bundle:v<version>    bundle.Dockerfile
#   catalog            ghcr.io/secrets-store-csi-py/operator-catalog:v<version>   catalog.Dockerfile
# Bases made here because nothing can be pulled (same names as the public images the FROMs name):
#   docker.io/library/python:3.11-slim-bookworm  images/python-base.Dockerfile (debootstrap; docs/real-node.md)
#   quay.io/operator-framework/opm:<OPM_VERSION>  images/opm.Dockerfile (opm + grpc_health_probe builds)
#
# Builds: `buildah bud --isolation chroot --pull=never --timestamp 0` with SOURCE_DATE_EPOCH=0, vfs
# storage in $TOOLS_CACHE/containers (never the host's default storage). Two builds from scratch give
# the same manifest digest (`reproduce` checks it). The build steps reach PyPI (pip wheel) with the
# host's resolver and CA bundle, bind-mounted for the build only.
#
# Environment: SSCSI_REGISTRY (push; e.g. 127.0.0.1:5000), SSCSI_SNAPSHOTTER (import; overlayfs|native,
# default: the node's containerd config), SSCSI_CONTAINERD_SOCK (default /run/containerd/containerd.sock),
# SSCSI_DEBIAN_MIRROR (debootstrap; default http://deb.debian.org/debian).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=hack/versions.env
source "$HERE/versions.env"
# shellcheck source=hack/lib-packages.sh
source "$HERE/lib-packages.sh"

# Bump when this script's way of building changes (invalidates every cached image).
RECIPE=1
# The python base's own recipe (debootstrap takes minutes: versioned separately).
BASE_RECIPE=1
BASE_PACKAGES=python3.11,python3-pip,ca-certificates,netbase
BUILD_PACKAGES=(buildah skopeo debootstrap catatonit busybox-static containerd)
CACHE="$TOOLS_CACHE/images"
STORAGE=(--root "$TOOLS_CACHE/containers/storage" --runroot /run/sscsi-containers --storage-driver vfs)
CONTAINERD_SOCK="${SSCSI_CONTAINERD_SOCK:-/run/containerd/containerd.sock}"
DEBIAN_MIRROR="${SSCSI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON_BASE=docker.io/library/python:3.11-slim-bookworm
OPM_BASE="quay.io/operator-framework/opm:$OPM_VERSION"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n1)"
NODE_IMAGES=(pause busybox driver operator provider livenessprobe upstream-provider)
ALL_IMAGES=("${NODE_IMAGES[@]}" bundle catalog)
# The repository files each project image's build context contributes (what its COPY lines read).
PY_INPUTS=(constraints.txt kube proto driver provider operator)
# Each Python image builds only its own part and the layers under it (README "Packaging").
declare -A PY_PARTS=([driver]="kube proto driver" [operator]="kube operator" [provider]="proto provider")

ilog() { printf '[images] %s\n' "$*" >&2; }
bah() { buildah "${STORAGE[@]}" "$@"; }

# image_info NAME: sets PUBLIC (reference), DOCKERFILE, CONTEXT (dir), INPUTS (repo paths hashed
# into the key), BINS (host files copied into a context of their own: PATH[:NAME]), ARGS (build
# args), OWN (1: tagged with the input key too), DEPS (local base images). No side effects.
image_info() {
  OWN=0 INPUTS=() ARGS=() DEPS=() BINS=() CONTEXT=$REPO
  case $1 in
    pause)
      PUBLIC=registry.k8s.io/pause:3.10 DOCKERFILE=images/pause.Dockerfile
      BINS=(/usr/bin/catatonit) ;;
    busybox)
      PUBLIC=docker.io/library/busybox:1.35 DOCKERFILE=images/busybox.Dockerfile
      BINS=(/bin/busybox) ;;
    driver | operator | provider)
      local repo=$1
      [[ $1 == provider ]] && repo=e2e-provider
      PUBLIC="ghcr.io/secrets-store-csi-py/$repo:v$VERSION" DOCKERFILE="images/$1.Dockerfile" OWN=1
      read -ra INPUTS <<<"constraints.txt ${PY_PARTS[$1]}"
      ARGS=("VERSION=$VERSION") DEPS=(python-base)
      [[ $1 == operator ]] && INPUTS+=(assets) ;;
    livenessprobe)
      PUBLIC="registry.k8s.io/sig-storage/livenessprobe:$LIVENESSPROBE_VERSION"
      DOCKERFILE=images/livenessprobe.Dockerfile ARGS=("VERSION=$LIVENESSPROBE_VERSION")
      BINS=("$TOOLS_CACHE/tools/bin/livenessprobe") ;;
    upstream-provider)
      PUBLIC="gcr.io/k8s-staging-csi-secrets-store/e2e-provider:$UPSTREAM_DRIVER_VERSION"
      DOCKERFILE=images/upstream-e2e-provider.Dockerfile ARGS=("VERSION=$UPSTREAM_DRIVER_VERSION")
      BINS=("$TOOLS_CACHE/tools/bin/upstream-e2e-provider:e2e-provider") ;;
    bundle)
      PUBLIC="ghcr.io/secrets-store-csi-py/operator-bundle:v$VERSION" DOCKERFILE=bundle.Dockerfile OWN=1
      INPUTS=(bundle) ;;
    catalog)
      PUBLIC="ghcr.io/secrets-store-csi-py/operator-catalog:v$VERSION" DOCKERFILE=catalog.Dockerfile OWN=1
      INPUTS=(catalog) DEPS=(opm-base) ;;
    python-base)
      PUBLIC=$PYTHON_BASE DOCKERFILE=images/python-base.Dockerfile CONTEXT="$CACHE/python-base-$(python_base_key)" ;;
    opm-base)
      PUBLIC=$OPM_BASE DOCKERFILE=images/opm.Dockerfile
      BINS=("$TOOLS_CACHE/tools/bin/opm" "$TOOLS_CACHE/tools/bin/grpc_health_probe") ;;
    *)
      ilog "unknown image $1; known: ${ALL_IMAGES[*]}"
      exit 2 ;;
  esac
  ((${#BINS[@]} == 0)) || CONTEXT="$CACHE/context/$1"
}

# prepare_context NAME: make the build context of NAME exist (after image_info NAME).
prepare_context() {
  if [[ $1 == python-base ]]; then
    [[ -f "$CONTEXT/rootfs.tar" ]] || make_python_rootfs "$CONTEXT"
  elif ((${#BINS[@]})); then
    stage_binaries "$CONTEXT" "${BINS[@]}"
  fi
}

# stage_binaries DIR PATH[:NAME-IN-CONTEXT]...: a build context holding copies of host binaries.
stage_binaries() {
  local dir=$1 spec src dst
  shift
  rm -rf "$dir" && mkdir -p "$dir"
  for spec in "$@"; do
    src=${spec%%:*} dst=${spec#*:}
    [[ $spec == *:* ]] || dst=$(basename "$src")
    if [[ ! -x $src ]]; then
      ilog "missing $src: run 'make node-tools' (hack/build-tools.sh) or install its Debian package"
      exit 1
    fi
    cp -L "$src" "$dir/$dst"
    chmod 755 "$dir/$dst"
  done
}

# --- the python base ------------------------------------------------------------------------------
# Made once per recipe: debootstrap, trimmed like the slim images, day- and host-dependent files
# cleared, packed as a sorted tar with mtime 0. Cached in $CACHE/python-base-<key>/rootfs.tar.
python_base_key() {
  { echo "base=$BASE_RECIPE packages=$BASE_PACKAGES suite=bookworm variant=minbase"
    sed -n '/^make_python_rootfs()/,/^}/p' "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16
}

make_python_rootfs() {
  local dir=$1 root="$1/rootfs" t0=$SECONDS
  ilog "debootstrap bookworm (minbase + $BASE_PACKAGES) for the python base; a few minutes, once"
  rm -rf "$dir" && mkdir -p "$dir"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$DEBIAN_MIRROR" >"$dir/debootstrap.log" 2>&1 ||
    { tail -n 20 "$dir/debootstrap.log" >&2; exit 1; }
  # What the slim images do not carry either: package lists and caches, logs, docs.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/cache/debconf/*-old \
    "$root"/root/.cache "$root"/var/cache/ldconfig/aux-cache "$root"/dev/* "$root"/proc/* "$root"/sys/* \
    "$root"/run/* "$root"/tmp/*
  # pip installs system-wide, as in the python images (they have no EXTERNALLY-MANAGED marker).
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  # Day-dependent: every account's "last password change" day. Host-dependent: copied-in files.
  sed -i 's/^\([^:]*:[^:]*:\)[0-9]*:/\1:/' "$root/etc/shadow"
  rm -f "$root/etc/shadow-"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  : >"$root/etc/machine-id"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --xattrs -C "$root" -cf "$dir/rootfs.tar.tmp" .
  mv "$dir/rootfs.tar.tmp" "$dir/rootfs.tar"
  rm -rf "$root"
  local old
  for old in "$CACHE"/python-base-*; do [[ $old == "$dir" ]] || rm -rf "$old"; done
  ilog "python base root filesystem ready in $((SECONDS - t0))s ($(($(stat -c %s "$dir/rootfs.tar") >> 20)) MiB)"
}

# --- keys, builds -------------------------------------------------------------------------------
# image_key NAME: SHA-256 of everything the build reads (after image_info NAME).
image_key() {
  local dep
  {
    printf 'recipe=%s name=%s ref=%s args=%s\n' "$RECIPE" "$1" "$PUBLIC" "${ARGS[*]}"
    cat "$REPO/$DOCKERFILE" "$REPO/.dockerignore"
    ((${#INPUTS[@]} == 0)) || (cd "$REPO" && git ls-files -co --exclude-standard -z -- "${INPUTS[@]}" |
      sort -z | xargs -0 -r sha256sum)
    local bin
    for bin in "${BINS[@]}"; do
      if [[ -e ${bin%%:*} ]]; then printf '%s %s\n' "${bin#*:}" "$(sha256sum <"${bin%%:*}")"; fi
    done
    [[ $1 != python-base ]] || python_base_key
    for dep in "${DEPS[@]}"; do printf 'dep %s %s\n' "$dep" "$(built_digest "$dep")"; done
  } | sha256sum | cut -c1-12
}

state_file() { printf '%s/state/%s\n' "$CACHE" "$1"; }

# built_digest NAME: the manifest digest of the image in buildah's storage under its public name.
built_digest() {
  local ref
  ref=$( (image_info "$1" && echo "$PUBLIC") | tail -n1)
  bah images --no-trunc --noheading --digests --format '{{.Digest}}' "$ref" 2>/dev/null | head -n1 || true
}

# ensure_built NAME: build unless the recorded key and the stored digest still match.
ensure_built() {
  local name=$1 dep
  image_info "$name"
  for dep in "${DEPS[@]}"; do ensure_built "$dep"; done
  image_info "$name"
  local key state digest
  key=$(image_key "$name")
  state=$(state_file "$name")
  digest=$(built_digest "$name")
  if [[ -n $digest && "$(cat "$state" 2>/dev/null)" == "$key $digest" ]]; then
    return
  fi
  prepare_context "$name"
  build_one "$name" "$key" "${STORAGE[@]}"
  digest=$(built_digest "$name")
  mkdir -p "$(dirname "$state")"
  printf '%s %s\n' "$key" "$digest" >"$state"
  # Earlier builds' key tags of this image (vfs keeps full copies): untag them, drop what is unused.
  if ((OWN)); then
    local old
    for old in $(bah images --noheading --format '{{.Name}}:{{.Tag}}' --filter "reference=${PUBLIC%:*}" 2>/dev/null); do
      [[ $old == "$PUBLIC-"* && $old != "$(key_ref "$key")" ]] && bah rmi "$old" >/dev/null 2>&1 || true
    done
    bah rmi --prune >/dev/null 2>&1 || true
  fi
}

# build_one NAME KEY STORAGE-OPTIONS...: buildah bud, tagged with the public name (+ the key tag).
# FROZEN_REPO (reproduce): a copy of the repository's build inputs to build from instead of $REPO.
build_one() {
  local name=$1 key=$2 t0=$SECONDS a
  shift 2
  image_info "$name"
  local root=${FROZEN_REPO:-$REPO} context=$CONTEXT
  [[ $CONTEXT != "$REPO" ]] || context=$root
  local -a tags=(--tag "$PUBLIC") bargs=()
  ((OWN)) && tags+=(--tag "$(key_ref "$key")")
  for a in "${ARGS[@]}"; do bargs+=(--build-arg "$a"); done
  ilog "building $name ($PUBLIC) from $DOCKERFILE"
  SOURCE_DATE_EPOCH=0 buildah "$@" bud --quiet --isolation chroot --pull=never --format oci \
    --timestamp 0 --build-arg SOURCE_DATE_EPOCH=0 "${bargs[@]}" "${tags[@]}" \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --file "$root/$DOCKERFILE" "$context" >/dev/null
  ilog "built $name in $((SECONDS - t0))s"
}

key_ref() { printf '%s-%s\n' "$PUBLIC" "$1"; }

# test_ref NAME: the reference `names` prints (after ensure_built or from the state file).
test_ref() {
  image_info "$1"
  if ((OWN)); then
    local key
    key=$(cut -d' ' -f1 "$(state_file "$1")" 2>/dev/null || true)
    [[ -n $key ]] || key=$(image_key "$1")
    key_ref "$key"
  else
    printf '%s\n' "$PUBLIC"
  fi
}

json_map() {  # name value name value ...
  local out="{" sep=""
  while (($#)); do
    out+="$sep\"$1\": \"$2\"" sep=", "
    shift 2
  done
  printf '%s}\n' "$out"
}

print_names() {
  local -a kv=()
  local n
  for n in "$@"; do kv+=("$n" "$(test_ref "$n")"); done
  json_map "${kv[@]}"
}

# --- containerd, registry ---------------------------------------------------------------------------
# storage_ref REF: REF in this script's buildah storage, as skopeo names it.
storage_ref() { printf 'containers-storage:[vfs@%s+/run/sscsi-containers]%s\n' "$TOOLS_CACHE/containers/storage" "$1"; }

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# The snapshotter CRI unpacks with: $SSCSI_SNAPSHOTTER, else the node's containerd config (hack/node-up.sh).
snapshotter() {
  local s=${SSCSI_SNAPSHOTTER:-}
  [[ -n $s ]] || s=$(sed -n 's/^ *snapshotter = "\(.*\)"$/\1/p' /etc/containerd/sscsi-node.toml 2>/dev/null | head -n1)
  printf '%s\n' "${s:-overlayfs}"
}

ctr_digest() {  # reference -> the manifest digest containerd holds for it
  ctr_k8s images ls "name==$1" 2>/dev/null | awk -v r="$1" 'NR > 1 && $1 == r { print $3 }'
}

import_one() {
  local name=$1 digest ref key_tag="" archive
  image_info "$name"
  digest=$(cut -d' ' -f2 "$(state_file "$name")")
  ref=$PUBLIC
  ((OWN)) && key_tag=$(test_ref "$name")
  if [[ "$(ctr_digest "$ref")" == "$digest" && (-z $key_tag || "$(ctr_digest "$key_tag")" == "$digest") ]]; then
    return
  fi
  local t0=$SECONDS
  archive="$(mktemp -d "$CACHE/.import.XXXXXX")"
  # skopeo keeps the layers as stored (uncompressed): the digest containerd gets is buildah's.
  skopeo copy --quiet --dest-oci-accept-uncompressed-layers "$(storage_ref "$ref")" \
    "oci-archive:$archive/image.tar:$ref" >/dev/null
  ctr_k8s images import --snapshotter "$(snapshotter)" "$archive/image.tar" >/dev/null
  rm -rf "$archive"
  [[ -z $key_tag ]] || ctr_k8s images tag --force "$ref" "$key_tag" >/dev/null
  local got
  got=$(ctr_digest "$ref")
  if [[ $got != "$digest" ]]; then
    ilog "$ref: containerd holds $got after the import, buildah built $digest"
    exit 1
  fi
  ilog "imported $ref${key_tag:+ (+ $key_tag)} ($digest) in $((SECONDS - t0))s"
}

push_one() {
  local name=$1 ref dest
  image_info "$name"
  for ref in "$PUBLIC" $( ((OWN)) && test_ref "$name"); do
    dest="$SSCSI_REGISTRY/${ref#*/}"
    # Layers go gzip-compressed (deterministic: the same build gives the same pushed digest).
    bah push --quiet --tls-verify=false "$PUBLIC" "docker://$dest" >/dev/null
    ilog "pushed $dest"
  done
}

# --- reproduce --------------------------------------------------------------------------------------
# Two builds of each image, each into an empty storage of its own (no layer, no image, no base kept:
# the bases are rebuilt there too, the python base from its cached root filesystem), from one frozen
# copy of the inputs (others may edit the tree meanwhile). Prints "name digest-1 digest-2" lines.
reproduce() {
  local scratch name ok=1 run dep
  scratch="$(mktemp -d /var/tmp/sscsi-images-reproduce.XXXXXX)"
  export FROZEN_REPO="$scratch/repo"
  mkdir -p "$FROZEN_REPO"
  (cd "$REPO" && git ls-files -co --exclude-standard -z -- .dockerignore images bundle.Dockerfile \
    catalog.Dockerfile "${PY_INPUTS[@]}" assets bundle catalog | xargs -0 cp --parents -t "$FROZEN_REPO")
  for name in "$@"; do
    image_info "$name"
    for dep in "${DEPS[@]}"; do image_info "$dep" && prepare_context "$dep"; done
    image_info "$name" && prepare_context "$name"
    local -a digests=()
    for run in 1 2; do
      local -a fresh=(--root "$scratch/storage-$run" --runroot "$scratch/run-$run" --storage-driver vfs)
      image_info "$name"
      for dep in "${DEPS[@]}"; do build_one "$dep" - "${fresh[@]}"; done
      build_one "$name" frozen "${fresh[@]}"
      image_info "$name"
      digests+=("$(buildah "${fresh[@]}" images --no-trunc --noheading --digests --format '{{.Digest}}' \
        "$PUBLIC" | sed -n 1p)")
      buildah "${fresh[@]}" rmi --all --force >/dev/null 2>&1 || true
      rm -rf "$scratch/storage-$run" "$scratch/run-$run"
    done
    if [[ ${digests[0]} == "${digests[1]}" ]]; then
      ilog "reproduced $name: ${digests[0]}"
    else
      ilog "NOT reproducible: $name: ${digests[0]} vs ${digests[1]}"
      ok=0
    fi
    printf '%s %s %s\n' "$name" "${digests[0]}" "${digests[1]}"
  done
  rm -rf "$scratch"
  ((ok))
}

main() {
  local cmd=${1:-}
  shift || true
  local -a names=("$@")
  ((${#names[@]})) || names=("${NODE_IMAGES[@]}")
  case $cmd in
    ensure-tools)
      ensure_debian_packages "${BUILD_PACKAGES[@]}"
      return ;;
    names)
      print_names "${names[@]}"
      return ;;
    build | import | push | digests | reproduce) ;;
    *)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
      exit 2 ;;
  esac
  if [[ $EUID -ne 0 ]]; then
    ilog "must run as root (buildah with chroot isolation, containerd)"
    exit 1
  fi
  ensure_debian_packages "${BUILD_PACKAGES[@]}"
  mkdir -p "$CACHE"
  local n
  # One builder at a time per cache (node-up, the tests and the OLM tier all call this).
  exec 7>"$CACHE/.lock"
  flock 7
  if [[ $cmd == reproduce ]]; then
    reproduce "${names[@]}"
    return
  fi
  for n in "${names[@]}"; do ensure_built "$n"; done
  case $cmd in
    import) for n in "${names[@]}"; do import_one "$n"; done ;;
    push)
      if [[ -z ${SSCSI_REGISTRY:-} ]]; then
        ilog "push needs SSCSI_REGISTRY (host:port of a plain-http registry)"
        exit 2
      fi
      for n in "${names[@]}"; do push_one "$n"; done ;;
    digests)
      local -a kv=()
      for n in "${names[@]}"; do kv+=("$n" "$(built_digest "$n")"); done
      json_map "${kv[@]}"
      return ;;
  esac
  print_names "${names[@]}"
}

main "$@"; exit $?
