# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Shared by hack/node-up.sh, hack/node-down.sh and hack/node-probe.sh: the real-node tier
# (containerd + kubelet registered on a control plane of its own).
#
# The node has its OWN control plane (never the shared one in /tmp/sscsi-cluster: the operator
# tests' DaemonSets would schedule onto a real node). Its own variables, so that the Makefile's
# exported SSCSI_CLUSTER_DIR (the shared cluster) never leaks in; defaults:
#   SSCSI_NODE_CLUSTER_DIR     /tmp/sscsi-node-cluster
#   SSCSI_NODE_APISERVER_PORT  16443   SSCSI_NODE_ETCD_PORT 33790   SSCSI_NODE_ETCD_PEER_PORT 33800
#   SSCSI_NODE_KCM_PORT        14357   SSCSI_NODE_SCHEDULER_PORT 14359
#   SSCSI_NODE_NAME            sscsi-node
#   SSCSI_KUBELET_PORT         10250 (healthz 10248)
# They are handed to hack/cluster-up.sh / cluster-down.sh as SSCSI_CLUSTER_DIR and SSCSI_*_PORT.
# Host-wide state this tier owns (only one real node per machine):
#   containerd  /etc/containerd/sscsi-node.toml (config), /var/lib/containerd, /run/containerd
#   kubelet     /var/lib/kubelet (bind-mounted onto itself, rshared)
#   CNI         /etc/cni/net.d/10-sscsi-node.conflist, bridge cni-sscsi0, 10.88.0.0/16
#   node IP     10.89.0.1 on an empty bridge sscsi-node0: kubelet refuses a loopback node IP, and
#               a host-only address keeps the kubelet API (anonymous, AlwaysAllow) off the network;
#               /etc/hosts maps $SSCSI_NODE_NAME to it (the apiserver dials the Hostname address)
#   services    kube-proxy (iptables mode, host process) and CoreDNS (10.0.0.10) from hack/addons.sh;
#               the apiserver advertises the node IP (the `kubernetes` Service's endpoint)
#   registry    hack/registry.sh on 127.0.0.1:5000; containerd's hosts.toml files map the public
#               registry hosts to it
# Node files: $SSCSI_NODE_CLUSTER_DIR/node/ (kubelet config, kubeconfig, certs),
# logs: $SSCSI_NODE_CLUSTER_DIR/logs/{containerd,kubelet}.log, pids: $SSCSI_NODE_CLUSTER_DIR/pids/.

# A node whose control plane was started keeps its ports (its ports.env), whatever the caller's environment
# says: cluster-up.sh keeps a running cluster as it is, so kubelet's and kube-proxy's kubeconfigs, and
# restarts (hack/node-component.sh), must name the ports it serves on, not this call's defaults (which
# may be another cluster's on this machine). hack/cluster-down.sh removes ports.env.
NODE_PORTS_ENV="${SSCSI_NODE_CLUSTER_DIR:-/tmp/sscsi-node-cluster}/ports.env"
if [[ -f "$NODE_PORTS_ENV" ]]; then
  # shellcheck source=/dev/null
  source "$NODE_PORTS_ENV"
  SSCSI_NODE_APISERVER_PORT="${RUNNING_APISERVER_PORT:-${SSCSI_NODE_APISERVER_PORT:-}}"
  SSCSI_NODE_ETCD_PORT="${RUNNING_ETCD_PORT:-${SSCSI_NODE_ETCD_PORT:-}}"
  SSCSI_NODE_ETCD_PEER_PORT="${RUNNING_ETCD_PEER_PORT:-${SSCSI_NODE_ETCD_PEER_PORT:-}}"
  SSCSI_NODE_KCM_PORT="${RUNNING_KCM_PORT:-${SSCSI_NODE_KCM_PORT:-}}"
  SSCSI_NODE_SCHEDULER_PORT="${RUNNING_SCHEDULER_PORT:-${SSCSI_NODE_SCHEDULER_PORT:-}}"
fi
export SSCSI_CLUSTER_DIR="${SSCSI_NODE_CLUSTER_DIR:-/tmp/sscsi-node-cluster}"
export SSCSI_APISERVER_PORT="${SSCSI_NODE_APISERVER_PORT:-16443}"
export SSCSI_ETCD_PORT="${SSCSI_NODE_ETCD_PORT:-33790}"
export SSCSI_ETCD_PEER_PORT="${SSCSI_NODE_ETCD_PEER_PORT:-33800}"
export SSCSI_KCM_PORT="${SSCSI_NODE_KCM_PORT:-14357}"
export SSCSI_SCHEDULER_PORT="${SSCSI_NODE_SCHEDULER_PORT:-14359}"

NODE_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-cluster.sh
source "$NODE_LIB_DIR/lib-cluster.sh"

NODE_NAME="${SSCSI_NODE_NAME:-sscsi-node}"
NODE_DIR="$CLUSTER_DIR/node"
KUBELET_PORT="${SSCSI_KUBELET_PORT:-10250}"
KUBELET_HEALTHZ_PORT="${SSCSI_KUBELET_HEALTHZ_PORT:-10248}"
KUBELET_ROOT=/var/lib/kubelet
CONTAINERD_CONFIG=/etc/containerd/sscsi-node.toml
CONTAINERD_ROOT=/var/lib/containerd
CONTAINERD_STATE=/run/containerd
CONTAINERD_SOCK=$CONTAINERD_STATE/containerd.sock
CNI_CONF=/etc/cni/net.d/10-sscsi-node.conflist
CNI_NETWORK=sscsi-node
CNI_BRIDGE=cni-sscsi0
POD_CIDR=10.88.0.0/16
SERVICE_IP=10.0.0.1
NODE_IP="${SSCSI_NODE_IP:-10.89.0.1}"
NODE_LINK=sscsi-node0
# How the node's control plane serves (hack/cluster-up.sh reads these): beyond loopback, advertising the
# node IP, the lease reconciler keeping the `kubernetes` Service's endpoint. node-up.sh and
# node-component.sh (restarts) both start it with them.
NODE_CLUSTER_ENV=(SSCSI_APISERVER_BIND_ADDRESS=0.0.0.0 "SSCSI_APISERVER_ADVERTISE_ADDRESS=$NODE_IP" SSCSI_ENDPOINT_RECONCILER=lease)
NAT_CHAIN=SSCSI-NODE
# containerd's per-registry configuration (hack/registry.sh hosts) and the cluster DNS Service IP.
CONTAINERD_CERTS_D=/etc/containerd/certs.d
CLUSTER_DNS_IP=10.0.0.10
# The image containerd runs as every pod's sandbox (hack/images.sh builds it from catatonit).
PAUSE_IMAGE="${SSCSI_PAUSE_IMAGE:-registry.k8s.io/pause:3.10}"
# The node's runtime, and the tools hack/images.sh builds and imports its images with.
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack buildah skopeo debootstrap catatonit busybox-static)

nlog() { printf '[node] %s\n' "$*" >&2; }

# close_inherited_fds: close every descriptor above 2 this shell inherited. The daemons started from
# here (containerd, etcd, apiserver, kubelet, kube-proxy, registry) inherit the caller's open files:
# under `flock /run/sscsi-node.lock hack/node-up.sh` they would hold that lock for their lifetime.
close_inherited_fds() {
  local fd
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2 && fd != 255)) && eval "exec $fd>&-" 2>/dev/null
  done
  return 0
}

# detached CMD...: exec CMD in a session of its own with no inherited descriptor above 2, so that a
# caller's lock (`flock /run/sscsi-node.lock make e2e-node`) is not held for the daemon's whole
# life. Run it in the background: `detached cmd args </dev/null >log 2>&1 &` ($! is CMD's pid).
detached() {
  local fd
  for fd in /proc/"$BASHPID"/fd/*; do
    fd=${fd##*/}
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec setsid "$@"
}

# The shared control plane must never get a real node.
refuse_shared_cluster() {
  if [[ "$CLUSTER_DIR" == "$(realpath -m /tmp/sscsi-cluster)" && -z "${SSCSI_NODE_ALLOW_SHARED:-}" ]]; then
    nlog "refusing to register a real node on the shared control plane $CLUSTER_DIR"
    nlog "(SSCSI_NODE_CLUSTER_DIR picks the node's own control plane; default /tmp/sscsi-node-cluster)"
    exit 2
  fi
}

# cmdline PID: the NUL-separated command line, spaces instead of NULs.
cmdline_of() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null; }

# node_pids KIND: pids of our kubelet / containerd / the shims of our containerd.
node_pids() {
  local kind=$1 dir pid cmd
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    cmd="$(cmdline_of "$pid")" || continue
    case $kind in
      kubelet) [[ "$cmd" == "$KUBE_BIN/kubelet "* && "$cmd" == *"$NODE_DIR/"* ]] ;;
      containerd) [[ "$cmd" == "containerd --config $CONTAINERD_CONFIG"* || "$cmd" == "/usr/bin/containerd --config $CONTAINERD_CONFIG"* ]] ;;
      shim) [[ "$cmd" == *containerd-shim-runc-v2*" -address $CONTAINERD_SOCK"* ]] ;;
      *) false ;;
    esac && printf '%s\n' "$pid"
  done
  return 0
}

# mounts_under DIR: mount points at or below DIR, deepest first.
mounts_under() {
  awk -v d="$1" '{ m=$5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' /proc/self/mountinfo |
    awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

kctl() { "$KUBE_BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"; }
