#!/usr/bin/env bash
# Images of the cluster add-ons and of OLM, packaged from the binaries hack/build-tools.sh builds
# (`live` target) and pushed to the loopback registry (hack/registry.sh) under their public names:
#
#   registry.k8s.io/coredns/coredns:$COREDNS_VERSION   /coredns
#   quay.io/operator-framework/olm:$OLM_VERSION        /bin/olm, catalog, package-server, copy-content,
#                                                      cpb, and /bin/cp (busybox): OLM's bundle-unpack
#                                                      Job runs `/bin/cp -Rv /bin/cpb /util/cpb` in it
#   quay.io/operator-framework/opm:$OPM_VERSION        built by hack/images.sh (opm-base, the base of
#                                                      catalog.Dockerfile), pushed from here: OLM's
#                                                      bundle-unpack Job runs `opm alpha bundle extract`
#
# Usage: hack/live-images.sh [coredns|olm|opm|names]...  (default: all three)
# coredns and olm are FROM scratch images made with buildah in hack/images.sh's storage. A push is
# skipped when the registry already holds the tag built from the same inputs (a key over the files,
# kept in $TOOLS_CACHE/images).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$HERE/versions.env"
# shellcheck source=hack/lib-packages.sh
source "$HERE/lib-packages.sh"

REGISTRY="${SSCSI_REGISTRY:-127.0.0.1:5000}"
TOOLS_BIN="$TOOLS_CACHE/tools/bin"
OLM_BIN="$TOOLS_CACHE/tools/olm-$OLM_VERSION/bin"
KEYS_DIR="$TOOLS_CACHE/images"
# The storage hack/images.sh builds in (one image store for the project).
BUILDAH=(buildah --root "$TOOLS_CACHE/containers/storage" --runroot /run/sscsi-containers --storage-driver vfs)

ilog() { printf '[live-images] %s\n' "$*" >&2; }

declare -A REF=(
  [coredns]="registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
  [olm]="quay.io/operator-framework/olm:$OLM_VERSION"
  [opm]="quay.io/operator-framework/opm:$OPM_VERSION"
)

# files NAME: "source destination" lines.
files() {
  case $1 in
    coredns) echo "$TOOLS_BIN/coredns /coredns" ;;
    olm)
      local b
      for b in olm catalog package-server copy-content cpb; do echo "$OLM_BIN/$b /bin/$b"; done
      echo "/bin/busybox /bin/cp"
      ;;
  esac
}

# configure NAME CONTAINER: entrypoint and friends, like the upstream images.
configure() {
  local c=$2
  case $1 in
    coredns) "${BUILDAH[@]}" config --entrypoint '["/coredns"]' --port 53/udp --port 53/tcp "$c" ;;
    olm) "${BUILDAH[@]}" config --env PATH=/bin --user 65532:65532 "$c" ;;
  esac
}

in_registry() {  # repository-path tag
  curl -fsS --max-time 5 -o /dev/null -I \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/$1/manifests/$2"
}

build_one() {
  local name=$1 ref=${REF[$1]} src dst key path tag
  path=${ref#*/}
  tag=${path##*:}
  path=${path%:*}
  key="$( {
    echo "recipe=1 ref=$ref"
    files "$name" | while read -r src dst; do
      [[ -x "$src" ]] || { ilog "missing $src: run 'hack/build-tools.sh live olm'"; exit 1; }
      echo "$dst $(sha256sum <"$src")"
    done
  } | sha256sum | cut -c1-64)"
  mkdir -p "$KEYS_DIR"
  if [[ "$(cat "$KEYS_DIR/live-$name.key" 2>/dev/null)" == "$key" ]] && in_registry "$path" "$tag" &&
    "${BUILDAH[@]}" inspect --type image "$ref" >/dev/null 2>&1; then
    ilog "$ref: up to date"
    return
  fi
  ilog "building $ref"
  local c
  c="$("${BUILDAH[@]}" from --quiet scratch)"
  files "$name" | while read -r src dst; do
    "${BUILDAH[@]}" copy --quiet --chmod 0755 "$c" "$src" "$dst" >/dev/null
  done
  configure "$name" "$c"
  "${BUILDAH[@]}" commit --quiet --rm --timestamp 0 "$c" "$ref" >/dev/null
  "${BUILDAH[@]}" push --quiet --tls-verify=false "$ref" "docker://$REGISTRY/$path:$tag"
  printf '%s\n' "$key" >"$KEYS_DIR/live-$name.key"
  ilog "pushed $ref -> $REGISTRY/$path:$tag"
}

main() {
  local targets=("$@")
  ((${#targets[@]})) || targets=(coredns olm opm)
  if [[ "${targets[0]}" == names ]]; then
    local n
    for n in coredns olm opm; do echo "${REF[$n]}"; done
    return
  fi
  ensure_debian_packages buildah busybox-static
  "$HERE/registry.sh" status || "$HERE/registry.sh" up
  local t
  for t in "${targets[@]}"; do
    if [[ $t == opm ]]; then
      SSCSI_REGISTRY=$REGISTRY "$HERE/images.sh" push opm-base >/dev/null
      continue
    fi
    [[ -n "${REF[$t]:-}" ]] || { ilog "unknown image $t"; exit 2; }
    build_one "$t"
  done
}

main "$@"
