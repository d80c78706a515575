#!/usr/bin/env bash
# Run csi-sanity against the driver's real unix socket.
# The driver is node-only and serves ephemeral inline volumes: csi-sanity skips the
# Controller suites itself (no CONTROLLER_SERVICE capability) and the publish success
# paths ("should work", "should be idempotent") because they need CreateVolume; those
# paths are covered by tests/e2e with the kubelet emulator. Nothing is skipped by us.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/versions.env"
export PATH="$TOOLS_CACHE/kube-$KUBE_VERSION/bin:$TOOLS_CACHE/tools/bin:$PATH"
CLUSTER_DIR="${SSCSI_CLUSTER_DIR:-/tmp/sscsi-cluster}"
"$HERE/cluster-up.sh" >/dev/null

WORK="$(mktemp -d /tmp/sscsi-sanity.XXXXXX)"
LOGS="$CLUSTER_DIR/logs"
mkdir -p "$WORK/kubelet/pods" "$WORK/providers" "$LOGS"
DRIVER_LOG="$LOGS/sanity-driver.log"
"$ROOT/.venv/bin/secrets-store-csi-driver" \
  --endpoint="unix://$WORK/csi.sock" --nodeid=sanity-node \
  --kubeconfig="$CLUSTER_DIR/admin.kubeconfig" \
  --provider-volume="$WORK/providers" --additional-provider-volume-paths="$WORK/providers" \
  --kubelet-root-dir="$WORK/kubelet" --metrics-addr=127.0.0.1:0 -v=5 >"$DRIVER_LOG" 2>&1 &
DRIVER_PID=$!
cleanup() {
  kill "$DRIVER_PID" 2>/dev/null || true
  wait "$DRIVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do [[ -S "$WORK/csi.sock" ]] && break; sleep 0.1; done
[[ -S "$WORK/csi.sock" ]] || { echo "driver did not start; log: $DRIVER_LOG" >&2; cat "$DRIVER_LOG" >&2; exit 1; }

csi-sanity \
  --csi.endpoint="unix://$WORK/csi.sock" \
  --csi.mountdir="$WORK/kubelet/pods/sanity-target" \
  --csi.stagingdir="$WORK/kubelet/pods/sanity-staging" \
  --ginkgo.junit-report="$LOGS/sanity-junit.xml" \
  "$@"
