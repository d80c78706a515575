#!/usr/bin/env bash
# Stop the real node started by hack/node-up.sh and leave nothing behind:
#   1. kubelet (SIGTERM, then SIGKILL)
#   2. every container and sandbox in containerd's k8s.io namespace (tasks killed, deleted),
#      then containerd and any shim left over
#   3. every mount under /var/lib/kubelet (the driver's tmpfs, kubelet's projected/secret
#      volumes, subpaths) deepest first, then the /var/lib/kubelet bind mount itself; pod
#      directories are removed once nothing is mounted below them; sandbox network
#      namespaces (/run/netns/cni-*) and leftover overlay rootfs mounts under /run/containerd
#   4. the CNI bridge, its IP allocations and the iptables chain
#   5. the node's own control plane (hack/cluster-down.sh with the node's SSCSI_CLUSTER_DIR)
# The node's etcd data is always deleted (the next node-up starts an empty cluster); imported images
# stay in /var/lib/containerd (next node-up reuses them);
#   --purge  also deletes /var/lib/containerd and /var/lib/kubelet.
# Exit status: non-zero when a process or a mount survives.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-node.sh
source "$HERE/lib-node.sh"
refuse_shared_cluster

purge=0
for arg in "$@"; do
  case $arg in
    --purge) purge=1 ;;
    -h | --help)
      sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      nlog "unknown argument $arg"
      exit 2
      ;;
  esac
done

# stop_pids NAME TIMEOUT PID...: SIGTERM, wait, SIGKILL.
stop_pids() {
  local name=$1 timeout=$2
  shift 2
  (($#)) || return 0
  nlog "stopping $name (pid $*)"
  kill -TERM "$@" 2>/dev/null || true
  if ! wait_exit "$timeout" "$@"; then
    nlog "$name did not stop within ${timeout}s: SIGKILL"
    kill -KILL "$@" 2>/dev/null || true
    wait_exit 5 "$@" || true
  fi
}

# 1. kubelet (and kube-proxy, hack/addons.sh)
mapfile -t pids < <(node_pids kubelet)
stop_pids kubelet 20 "${pids[@]}"
"$HERE/addons.sh" down || true

# 2. containers, containerd, shims
if [[ -n "$(node_pids containerd)" ]] && ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
  c() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
  mapfile -t tasks < <(c tasks ls -q 2>/dev/null || true)
  if ((${#tasks[@]})); then
    nlog "killing ${#tasks[@]} container tasks"
    for t in "${tasks[@]}"; do c tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in "${tasks[@]}"; do
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        c tasks delete "$t" >/dev/null 2>&1 && break
        sleep 0.3
      done
    done
  fi
  mapfile -t containers < <(c containers ls -q 2>/dev/null || true)
  for id in "${containers[@]}"; do c containers delete "$id" >/dev/null 2>&1 || true; done
fi
mapfile -t pids < <(node_pids containerd)
stop_pids containerd 20 "${pids[@]}"
mapfile -t pids < <(node_pids shim)
stop_pids "containerd shims" 5 "${pids[@]}"

# 3. mounts
leftover=0
unmount_all_under() {
  local dir=$1 m
  while IFS= read -r m; do
    [[ -n "$m" ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(mounts_under "$dir")
}
for d in "$KUBELET_ROOT/pods" "$KUBELET_ROOT/plugins" "$CONTAINERD_STATE" /run/netns "$CONTAINERD_ROOT"; do
  unmount_all_under "$d"
done
rm -f /run/netns/cni-* 2>/dev/null || true
if [[ -d "$KUBELET_ROOT/pods" ]] && [[ -z "$(mounts_under "$KUBELET_ROOT/pods")" ]]; then
  rm -rf --one-file-system "${KUBELET_ROOT:?}/pods/"* 2>/dev/null || true
fi
# The bind mount of /var/lib/kubelet onto itself (possibly stacked by repeated node-ups).
while findmnt -n -M "$KUBELET_ROOT" >/dev/null 2>&1; do
  umount "$KUBELET_ROOT" 2>/dev/null || umount -l "$KUBELET_ROOT" 2>/dev/null || break
done
if [[ -n "$(mounts_under "$KUBELET_ROOT")" ]]; then
  nlog "mounts left under $KUBELET_ROOT:"
  mounts_under "$KUBELET_ROOT" >&2
  leftover=1
fi
rm -f "$PIDS_DIR/kubelet.pid" "$PIDS_DIR/containerd.pid" 2>/dev/null || true

# 4. network
for link in "$CNI_BRIDGE" "$NODE_LINK"; do
  if ip link show "$link" >/dev/null 2>&1; then
    ip link delete "$link" || true
  fi
done
rm -rf "/var/lib/cni/networks/$CNI_NETWORK" "/var/lib/cni/results/$CNI_NETWORK"-* 2>/dev/null || true
for hook in PREROUTING OUTPUT; do
  while iptables -t nat -D "$hook" -j "$NAT_CHAIN" 2>/dev/null; do :; done
done
iptables -t nat -F "$NAT_CHAIN" 2>/dev/null || true
if grep -q '# sscsi-node (hack/node-up.sh)$' /etc/hosts; then
  grep -v '# sscsi-node (hack/node-up.sh)$' /etc/hosts >/etc/hosts.sscsi-node.tmp || true
  cat /etc/hosts.sscsi-node.tmp >/etc/hosts
  rm -f /etc/hosts.sscsi-node.tmp
fi
iptables -t nat -X "$NAT_CHAIN" 2>/dev/null || true
"$HERE/registry.sh" down || true

# 5. the node's control plane
if ((purge)); then
  "$HERE/cluster-down.sh" --purge
  nlog "purging $CONTAINERD_ROOT and $KUBELET_ROOT"
  rm -rf --one-file-system "$CONTAINERD_ROOT" "$KUBELET_ROOT" "$CLUSTER_DIR/node"
else
  # The node's cluster is disposable: a node restarted on its old etcd data brought pods back with
  # new IPs under stale OLM state (package-server's APIService stayed FailedDiscoveryCheck), so
  # every node-up starts from an empty cluster; images and kubelet's root stay for speed.
  "$HERE/cluster-down.sh" --purge
fi

left="$(node_pids kubelet; node_pids containerd; node_pids shim)"
if [[ -n "$left" ]]; then
  nlog "processes still running: $left"
  exit 1
fi
((leftover == 0)) || exit 1
nlog "node stopped; logs kept in $LOGS_DIR"
