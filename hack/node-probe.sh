#!/usr/bin/env bash
# Can this machine run the real-node tier (hack/node-up.sh, tests/node)? Checks, without
# changing anything that outlives the check:
#   root; cgroup controllers (cpu cpuacct cpuset memory pids); the Kubernetes binaries (make tools);
#   a snapshotter (overlayfs, else native); mount propagation (shared bind mounts); veth pairs;
#   iptables' nat table; Debian packages present or the Debian mirror reachable (debootstrap of
#   the python base); the upstream sidecars and e2e provider (make node-tools).
# Exit 0 and "ok ..." when everything is there; exit 1 and one "missing: ..." line per problem
# (tests/node turns them into its skip message).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$HERE/versions.env"
KUBE_BIN="$TOOLS_CACHE/kube-$KUBE_VERSION/bin"

problems=()
notes=()
missing() { problems+=("$*"); }

if [[ $EUID -ne 0 ]]; then
  missing "root (containerd, kubelet and the driver mount filesystems)"
  printf 'missing: %s\n' "${problems[@]}"
  exit 1
fi

# cgroups: v1 controllers mounted, or v2 with them enabled.
for c in cpu cpuacct cpuset memory pids; do
  if [[ -d /sys/fs/cgroup/$c ]] || grep -qw "$c" /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    continue
  fi
  [[ $c == cpuacct ]] && [[ -f /sys/fs/cgroup/cgroup.controllers ]] && continue
  missing "cgroup controller $c (kubelet's container manager needs cpu, cpuacct, cpuset, memory, pids)"
done

for b in kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler etcd; do
  [[ -x "$KUBE_BIN/$b" ]] || missing "$KUBE_BIN/$b (run: make tools)"
done

tmp="$(mktemp -d /var/tmp/sscsi-node-probe.XXXXXX)"
cleanup() {
  local m
  for m in "$tmp/b/x" "$tmp/a/x" "$tmp/b" "$tmp/a" "$tmp/o/m"; do
    umount "$m" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp"/o/{l,u,w,m}
if mount -t overlay overlay -o "lowerdir=$tmp/o/l,upperdir=$tmp/o/u,workdir=$tmp/o/w" "$tmp/o/m" 2>/dev/null; then
  notes+=("snapshotter overlayfs")
  umount "$tmp/o/m"
else
  notes+=("snapshotter native (overlayfs unavailable on /var)")
fi

# Propagation: a tmpfs mounted under a shared bind mount must appear in its peer.
mkdir -p "$tmp/a/x" "$tmp/b"
if mount --bind "$tmp/a" "$tmp/a" 2>/dev/null && mount --make-rshared "$tmp/a" 2>/dev/null &&
  mount --rbind "$tmp/a" "$tmp/b" 2>/dev/null && mount -t tmpfs -o size=1m tmpfs "$tmp/a/x" 2>/dev/null &&
  findmnt -n "$tmp/b/x" >/dev/null 2>&1; then
  notes+=("mount propagation")
else
  missing "mount propagation (shared bind mounts: the driver's tmpfs must reach the pods)"
fi

if ip link add sscsi-probe0 type veth peer name sscsi-probe1 2>/dev/null; then
  ip link delete sscsi-probe0 2>/dev/null || true
else
  missing "veth pairs (the CNI bridge plugin connects every pod with one)"
fi
if ! ip link add sscsi-probe2 type bridge 2>/dev/null; then
  missing "bridge links (CNI bridge, node IP)"
else
  ip link delete sscsi-probe2 2>/dev/null || true
fi

# (iptables itself may still be missing: it is one of the packages checked below.)
if command -v iptables >/dev/null 2>&1 && ! iptables -t nat -L -n >/dev/null 2>&1; then
  missing "iptables nat table (pods reach the apiserver through a DNAT of the kubernetes Service)"
fi

need=()
read -r -a node_packages <<<"$(sed -n 's/^NODE_PACKAGES=(\(.*\))$/\1/p' "$HERE/lib-node.sh")"
for p in "${node_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    missing "Debian packages ${need[*]} (and no apt-get)"
  elif ! curl -sS -o /dev/null --max-time 10 "${SSCSI_DEBIAN_MIRROR:-http://deb.debian.org/debian}/dists/bookworm/Release" 2>/dev/null; then
    missing "Debian packages ${need[*]}, and the Debian mirror is unreachable"
  else
    notes+=("will install ${need[*]}")
  fi
elif ! compgen -G "$TOOLS_CACHE/images/python-base-*/rootfs.tar" >/dev/null &&
  ! curl -sS -o /dev/null --max-time 10 "${SSCSI_DEBIAN_MIRROR:-http://deb.debian.org/debian}/dists/bookworm/Release" 2>/dev/null; then
  missing "the Debian mirror (debootstrap of the python base image; nothing is cached yet)"
fi

for b in livenessprobe upstream-e2e-provider; do
  [[ -x "$TOOLS_CACHE/tools/bin/$b" ]] || missing "$TOOLS_CACHE/tools/bin/$b (run: make node-tools)"
done

if ((${#problems[@]})); then
  printf 'missing: %s\n' "${problems[@]}"
  exit 1
fi
printf 'ok: %s\n' "${notes[*]}"
