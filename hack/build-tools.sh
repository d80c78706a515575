#!/usr/bin/env bash
# Build pinned Kubernetes components and test tools from Go modules into a cache
# outside the repository. Re-running is a no-op when the binaries exist.
# Usage: hack/build-tools.sh [kube|csi-sanity|kwok|all|olm|node|<one tool>]...
#   node: the real-node tier's upstream pieces (livenessprobe, upstream e2e provider)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

log() { echo "[build-tools] $*" >&2; }

# One build at a time: concurrent `make` targets all depend on tools.
mkdir -p "$TOOLS_CACHE"
exec 9>"$TOOLS_CACHE/.build.lock"
flock 9

KUBE_BIN="$TOOLS_CACHE/kube-$KUBE_VERSION/bin"
TOOLS_BIN="$TOOLS_CACHE/tools/bin"

build_kube() {
  local want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
  # The recipe stamp changes whenever the build inputs below change, forcing a rebuild.
  local recipe="k8s=$KUBE_VERSION etcd=$ETCD_VERSION ldflags=v2"
  local missing=0
  for b in "${want[@]}"; do [[ -x "$KUBE_BIN/$b" ]] || missing=1; done
  [[ "$(cat "$KUBE_BIN/.recipe" 2>/dev/null)" == "$recipe" ]] || missing=1
  if [[ $missing == 0 ]]; then log "kubernetes $KUBE_VERSION: cached in $KUBE_BIN"; return; fi
  local K=$KUBE_VERSION MINOR S W
  MINOR=$(echo "$K" | cut -d. -f2); S="0.${K#1.}"
  W="$TOOLS_CACHE/kube-$K/src"
  mkdir -p "$W" "$KUBE_BIN"
  cd "$W"
  if [[ ! -f go.mod ]] || ! grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" go.mod; then
    rm -f go.mod go.sum
    go mod init local/k8sbuild >/dev/null 2>&1
    go mod edit -go=1.24.0 -godebug=default=go1.24
    local modfile staging
    modfile=$(go mod download -json "k8s.io/kubernetes@v$K" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
    staging=$(sed -n 's|^[[:space:]]*\(k8s.io/[a-z-]*\) => ./staging/.*|\1|p' "$modfile")
    for m in $staging; do go mod edit "-replace=$m=$m@v$S"; done
  fi
  log "resolving k8s.io/kubernetes v$K modules"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K" "k8s.io/kubernetes/cmd/kube-controller-manager@v$K" \
         "k8s.io/kubernetes/cmd/kube-scheduler@v$K" "k8s.io/kubernetes/cmd/kubelet@v$K" \
         "k8s.io/kubernetes/cmd/kubectl@v$K" "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  local V=k8s.io/component-base/version
  local C=k8s.io/client-go/pkg/version
  local LDF="-s -w -X $V.gitVersion=v$K -X $V.gitMajor=1 -X $V.gitMinor=$MINOR -X $V.gitTreeState=clean"
  LDF+=" -X $V.buildDate=1970-01-01T00:00:00Z -X $C.gitVersion=v$K -X $C.gitMajor=1 -X $C.gitMinor=$MINOR"
  log "compiling kubernetes $K (this takes a while on a cold cache)"
  # Build beside the cache and rename into place: running binaries are never overwritten.
  local OUT="$W/out"; rm -rf "$OUT"; mkdir -p "$OUT"
  go build -trimpath -ldflags "$LDF" -o "$OUT/" k8s.io/kubernetes/cmd/kube-apiserver \
     k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
     k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
  for b in "${want[@]}"; do mv -f "$OUT/$b" "$KUBE_BIN/$b"; done
  echo "$recipe" > "$KUBE_BIN/.recipe"
  log "kubernetes $K (etcd $ETCD_VERSION) built into $KUBE_BIN"
}

# go install into a versioned dir, then link into TOOLS_BIN
go_install() {  # name pkg@version
  local name=$1 spec=$2 ver=${2##*@}
  local dest="$TOOLS_CACHE/tools/$name-$ver"
  if [[ -x "$dest/$name" ]]; then log "$name $ver: cached"; else
    log "building $name $ver"
    mkdir -p "$dest"
    GOBIN="$dest" go install -trimpath -ldflags "-s -w" "$spec"
  fi
  mkdir -p "$TOOLS_BIN"; ln -sfn "$dest/$name" "$TOOLS_BIN/$name"
}

# Build with a throwaway wrapper module: for modules whose go.mod has replaces, and where
# `go install` fails because the proxy refuses the module's version list (deprecation check).
go_wrap_build() {  # name module@version pkg [tags] [replace...]
  local name=$1 modver=$2 pkg=$3 tags=${4:-}
  local replaces=("${@:5}")
  local ver=${modver##*@}
  local dest="$TOOLS_CACHE/tools/$name-$ver"
  if [[ -x "$dest/$name" ]]; then log "$name $ver: cached"; else
    log "building $name $ver (wrapper module)"
    mkdir -p "$dest/src"
    ( cd "$dest/src"
      [[ -f go.mod ]] || go mod init "local/$name" >/dev/null 2>&1
      for r in "${replaces[@]}"; do go mod edit "-replace=$r"; done
      go get "$modver"
      go build -trimpath ${tags:+-tags "$tags"} -ldflags "-s -w ${GO_WRAP_LDFLAGS:-}" -o "$dest/$name" "$pkg" )
  fi
  mkdir -p "$TOOLS_BIN"; ln -sfn "$dest/$name" "$TOOLS_BIN/$name"
}

build_csi_sanity() { go_install csi-sanity "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"; }
build_kwok() { go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"; }
# operator-sdk and opm: containers/image needs the openpgp tag to build without cgo/gpgme.
# The module proxy here serves ansible-operator-plugins v1.42.2 but not the v1.42.3 that
# operator-sdk v1.42.3 requires; the ansible plugin is a scaffolding plugin we never use.
build_operator_sdk() {
  # Stamped like upstream's release build: generate bundle writes it into the bundle's annotations.
  GO_WRAP_LDFLAGS="-X github.com/operator-framework/operator-sdk/internal/version.Version=$OPERATOR_SDK_VERSION" \
  go_wrap_build operator-sdk "github.com/operator-framework/operator-sdk/cmd/operator-sdk@$OPERATOR_SDK_VERSION" \
    github.com/operator-framework/operator-sdk/cmd/operator-sdk containers_image_openpgp \
    "github.com/operator-framework/ansible-operator-plugins=github.com/operator-framework/ansible-operator-plugins@$ANSIBLE_PLUGINS_VERSION"
}
build_opm() {
  go_wrap_build opm "github.com/operator-framework/operator-registry/cmd/opm@$OPM_VERSION" \
    github.com/operator-framework/operator-registry/cmd/opm containers_image_openpgp
}
# Sources the module proxy refuses (livenessprobe, the upstream driver's e2e provider): release
# tarballs in ../shared/upstream-src (see its README), unpacked into the cache.
UPSTREAM_SRC="${SSCSI_UPSTREAM_SRC:-$(cd "$HERE/.." && pwd)/../shared/upstream-src}"
unpack_upstream() {  # tarball-name top-dir -> prints the unpacked tree
  local tarball="$UPSTREAM_SRC/$1" dest="$TOOLS_CACHE/src/${1%.tar.gz}"
  if [[ ! -f "$dest/.unpacked" ]]; then
    [[ -f "$tarball" ]] || { log "missing $tarball (see shared/upstream-src/README.md)"; exit 1; }
    rm -rf "$dest" "$dest.tmp"; mkdir -p "$dest.tmp"
    tar -xzf "$tarball" -C "$dest.tmp"
    mv "$dest.tmp" "$dest"; touch "$dest/.unpacked"
  fi
  printf '%s/%s\n' "$dest" "$2"
}

# A kubernetes-csi sidecar from its release tree, as its release-tools/build.make builds it: static,
# vendored dependencies, the release stamped with -X main.version (what it logs and prints for --version).
build_csi_sidecar() {  # name tarball-name top-dir version
  local name=$1 ver=$4 src
  local dest="$TOOLS_CACHE/tools/$name-$ver"
  if [[ -x "$dest/$name" ]]; then log "$name $ver: cached"; else
    src="$(unpack_upstream "$2" "$3")"
    log "building $name $ver from $2"
    mkdir -p "$dest"
    ( cd "$src" && GOFLAGS=-mod=vendor go build -trimpath -ldflags "-X main.version=$ver -extldflags -static" \
        -o "$dest/$name.tmp" "./cmd/$name" )
    mv -f "$dest/$name.tmp" "$dest/$name"
  fi
  mkdir -p "$TOOLS_BIN"; ln -sfn "$dest/$name" "$TOOLS_BIN/$name"
}
build_livenessprobe() {
  build_csi_sidecar livenessprobe "livenessprobe-$LIVENESSPROBE_VERSION.tar.gz" livenessprobe "$LIVENESSPROBE_VERSION"
}
# monis.app/mlog (the upstream driver's logging helper) is not served by the module proxy here (403):
# upstream builds replace it with these few lines, the calls they make, straight onto klog (text output).
write_mlog_shim() {  # dir
  mkdir -p "$1"
  printf 'module monis.app/mlog\n\ngo 1.24\n\nrequire k8s.io/klog/v2 v2.120.1\n' > "$1/go.mod"
  cat > "$1/mlog.go" <<'GO'
// Package mlog stands in for monis.app/mlog in builds of upstream code (hack/build-tools.sh).
package mlog

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"
)

type LogFormat string

const (
	FormatText LogFormat = "text"
	FormatJSON LogFormat = "json"
)

// Setup returns the function main defers: flush buffered log lines on exit.
func Setup() func() { return klog.Flush }

// ValidateAndSetKlogLevelAndFormatGlobally checks the values; klog already holds the -v level.
func ValidateAndSetKlogLevelAndFormatGlobally(_ context.Context, level klog.Level, format LogFormat) error {
	if level < 0 {
		return fmt.Errorf("invalid log level %d", level)
	}
	if format != FormatText && format != FormatJSON {
		return fmt.Errorf("invalid log format %q", format)
	}
	return nil
}

func Error(msg string, err error, keysAndValues ...any) { klog.ErrorS(err, msg, keysAndValues...) }

func Fatal(err error, keysAndValues ...any) {
	klog.ErrorS(err, "fatal error", keysAndValues...)
	klog.FlushAndExit(klog.ExitFlushTimeout, 1)
}
GO
}

# The upstream Go driver, for the side-by-side benchmark (tests/bench). Built like its release
# image (CGO off, version stamped by ldflags, symbols kept) in a wrapper module, linked as
# upstream-secrets-store-csi-driver so it never shadows our entry point on PATH.
# Its logging helper monis.app/mlog is replaced by write_mlog_shim.
build_upstream_driver() {
  local mod=sigs.k8s.io/secrets-store-csi-driver ver=$UPSTREAM_DRIVER_VERSION
  local dest="$TOOLS_CACHE/tools/upstream-driver-$ver" bin=secrets-store-csi-driver
  if [[ -x "$dest/$bin" ]]; then log "upstream driver $ver: cached"; else
    log "building upstream driver $ver (wrapper module)"
    mkdir -p "$dest/src"
    ( cd "$dest/src"
      write_mlog_shim mlog
      [[ -f go.mod ]] || go mod init local/upstream-driver >/dev/null 2>&1
      go mod edit -replace=monis.app/mlog=./mlog
      go get "$mod/cmd/$bin@$ver"
      go build -trimpath -ldflags "-X $mod/pkg/version.BuildVersion=$ver" -o "$dest/$bin.tmp" "$mod/cmd/$bin"
      mv -f "$dest/$bin.tmp" "$dest/$bin" )
  fi
  mkdir -p "$TOOLS_BIN"; ln -sfn "$dest/$bin" "$TOOLS_BIN/upstream-$bin"
}

# kube-proxy of the same Kubernetes build, in the same wrapper module (shares its build cache; never
# forces the other components to rebuild).
build_kube_proxy() {
  local recipe="k8s=$KUBE_VERSION ldflags=v2"
  if [[ -x "$KUBE_BIN/kube-proxy" && "$(cat "$KUBE_BIN/.recipe-kube-proxy" 2>/dev/null)" == "$recipe" ]]; then
    log "kube-proxy $KUBE_VERSION: cached"; return
  fi
  [[ -f "$TOOLS_CACHE/kube-$KUBE_VERSION/src/go.mod" ]] || build_kube
  local K=$KUBE_VERSION MINOR V=k8s.io/component-base/version C=k8s.io/client-go/pkg/version
  MINOR=$(echo "$K" | cut -d. -f2)
  local LDF="-s -w -X $V.gitVersion=v$K -X $V.gitMajor=1 -X $V.gitMinor=$MINOR -X $V.gitTreeState=clean"
  LDF+=" -X $V.buildDate=1970-01-01T00:00:00Z -X $C.gitVersion=v$K -X $C.gitMajor=1 -X $C.gitMinor=$MINOR"
  log "compiling kube-proxy $K"
  ( cd "$TOOLS_CACHE/kube-$K/src"
    go build -trimpath -ldflags "$LDF" -o "$KUBE_BIN/kube-proxy.tmp" k8s.io/kubernetes/cmd/kube-proxy )
  mv -f "$KUBE_BIN/kube-proxy.tmp" "$KUBE_BIN/kube-proxy"
  echo "$recipe" >"$KUBE_BIN/.recipe-kube-proxy"
}

# OLM v0 (olm, catalog, package-server, copy-content, cpb) from one wrapper module: the binaries of
# OLM's own image, packaged by hack/live-images.sh.
build_olm_runtime() {
  local dest="$TOOLS_CACHE/tools/olm-$OLM_VERSION" mod=github.com/operator-framework/operator-lifecycle-manager
  local bins=(olm catalog package-server copy-content cpb) b missing=0
  for b in "${bins[@]}"; do [[ -x "$dest/bin/$b" ]] || missing=1; done
  if ((missing == 0)); then log "OLM $OLM_VERSION: cached"; return; fi
  log "building OLM $OLM_VERSION (olm, catalog, package-server, cpb; ~1,400 packages)"
  mkdir -p "$dest/src" "$dest/bin"
  ( cd "$dest/src"
    [[ -f go.mod ]] || go mod init local/olm >/dev/null 2>&1
    go get "$mod@$OLM_VERSION"
    rm -rf out && mkdir out
    go build -trimpath -ldflags "-s -w -X $mod/pkg/version.OLMVersion=${OLM_VERSION#v}" -o out/ \
      "$mod/cmd/olm" "$mod/cmd/catalog" "$mod/cmd/package-server" "$mod/cmd/copy-content" "$mod/util/cpb"
    for b in "${bins[@]}"; do mv -f "out/$b" "$dest/bin/$b"; done )
  # The CRDs OLM installs (deploy/chart/crds), kept beside the binaries.
  local dir
  dir=$(cd "$dest/src" && go list -m -f '{{.Dir}}' "$mod")
  rm -rf "$dest/crds" && cp -r "$dir/deploy/chart/crds" "$dest/crds" && chmod -R u+w "$dest/crds"
}

build_registry() {
  go_wrap_build registry "github.com/distribution/distribution/v3@$REGISTRY_VERSION" \
    github.com/distribution/distribution/v3/cmd/registry
}

# Installed as grpc_health_probe, the name OLM's catalog pod probe runs (go install names it
# after the module: grpc-health-probe).
build_grpc_health_probe() {
  local dest="$TOOLS_CACHE/tools/grpc_health_probe-$GRPC_HEALTH_PROBE_VERSION"
  if [[ -x "$dest/grpc_health_probe" ]]; then log "grpc_health_probe $GRPC_HEALTH_PROBE_VERSION: cached"; else
    log "building grpc_health_probe $GRPC_HEALTH_PROBE_VERSION"
    mkdir -p "$dest"
    GOBIN="$dest" go install -trimpath -ldflags "-s -w" \
      "github.com/grpc-ecosystem/grpc-health-probe@$GRPC_HEALTH_PROBE_VERSION"
    mv -f "$dest/grpc-health-probe" "$dest/grpc_health_probe"
  fi
  mkdir -p "$TOOLS_BIN"; ln -sfn "$dest/grpc_health_probe" "$TOOLS_BIN/grpc_health_probe"
}

# CoreDNS with only the plugins the node cluster's Corefile (hack/addons.sh) uses: a main package of
# our own sets the directive list instead of importing core/plugin (all ~60 plugins).
build_coredns() {
  local dest="$TOOLS_CACHE/tools/coredns-$COREDNS_VERSION"
  if [[ -x "$dest/coredns" ]]; then log "coredns $COREDNS_VERSION: cached"; else
    log "building coredns $COREDNS_VERSION (plugins: errors health ready kubernetes cache loop forward)"
    mkdir -p "$dest/src"
    ( cd "$dest/src"
      [[ -f go.mod ]] || go mod init local/coredns >/dev/null 2>&1
      cat >main.go <<'GO'
// CoreDNS for the node cluster: only the plugins its Corefile uses, in CoreDNS's own order.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "cache", "kubernetes", "loop", "forward"}
}

func main() { coremain.Run() }
GO
      go get "github.com/coredns/coredns@$COREDNS_VERSION"
      go build -trimpath -ldflags "-s -w" -o "$dest/coredns.tmp" .
      mv -f "$dest/coredns.tmp" "$dest/coredns" )
  fi
  mkdir -p "$TOOLS_BIN"; ln -sfn "$dest/coredns" "$TOOLS_BIN/coredns"
}

# The upstream driver's own e2e provider (test/e2eprovider: its own module, build tag e2e, the driver's
# module from the same tree through its `replace ../..`), built as upstream's Makefile builds it.
build_upstream_provider() {
  local ver=$UPSTREAM_DRIVER_VERSION name=e2e-provider src
  local dest="$TOOLS_CACHE/tools/upstream-e2e-provider-$ver"
  if [[ -x "$dest/$name" ]]; then log "upstream e2e provider $ver: cached"; else
    src="$(unpack_upstream "secrets-store-csi-driver-$ver.tar.gz" secrets-store-csi-driver)"
    log "building the upstream e2e provider $ver"
    mkdir -p "$dest"
    write_mlog_shim "$dest/mlog"
    ( cd "$src/test/e2eprovider"
      go mod edit "-replace=monis.app/mlog=$dest/mlog"
      go build -trimpath -tags e2e -o "$dest/$name.tmp" . )
    mv -f "$dest/$name.tmp" "$dest/$name"
  fi
  mkdir -p "$TOOLS_BIN"; ln -sfn "$dest/$name" "$TOOLS_BIN/upstream-$name"
}

# Everything runs inside main, called on the last line together with exit: bash reads a script
# lazily, so a build must never read lines edited while it ran.
main() {
local targets=("$@") t; [[ ${#targets[@]} -gt 0 ]] || targets=(all)
for t in "${targets[@]}"; do
  case $t in
    kube) build_kube ;;
    csi-sanity) build_csi_sanity ;;
    kwok) build_kwok ;;
    livenessprobe) build_livenessprobe ;;
    upstream-driver) build_upstream_driver ;;
    upstream-provider) build_upstream_provider ;;
    node) build_livenessprobe; build_upstream_provider ;;
    operator-sdk) build_operator_sdk ;;
    opm) build_opm ;;
    olm) build_operator_sdk; build_opm ;;
    kube-proxy) build_kube_proxy ;;
    olm-runtime) build_olm_runtime ;;
    registry) build_registry ;;
    coredns) build_coredns ;;
    grpc-health-probe) build_grpc_health_probe ;;
    # Everything the OLM-live tier (make e2e-olm, make demo) runs beyond `kube`.
    live) build_kube_proxy; build_registry; build_coredns; build_grpc_health_probe; build_olm_runtime ;;
    all) build_kube; build_csi_sanity; build_kwok ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
}

main "$@"; exit $?
