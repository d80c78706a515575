#!/usr/bin/env bash
# Bring up a one-node cluster with a REAL kubelet and containerd (the real-node tier, tests/node):
#   1. Debian packages (NODE_PACKAGES in hack/lib-node.sh: containerd, runc, CNI plugins, iptables and
#      the image tools), installed when missing; policy-rc.d keeps their services from starting
#   2. the pause and busybox images (hack/images.sh: buildah-built, imported into containerd)
#   3. containerd (cgroupfs, CNI bridge, no registry) in the background
#   4. /var/lib/kubelet as a shared mount (the driver's tmpfs must propagate to the pods)
#   5. a control plane of its own (hack/cluster-up.sh with SSCSI_CLUSTER_DIR=/tmp/sscsi-node-cluster
#      and its own ports: see hack/lib-node.sh)
#   6. kubelet registered on it; waits until the Node is Ready.
# Idempotent: what already runs is kept. hack/node-down.sh undoes all of it.
#
# stdout: the admin kubeconfig path. stderr: progress; logs in $SSCSI_CLUSTER_DIR/logs/.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-node.sh
source "$HERE/lib-node.sh"
# shellcheck source=hack/lib-packages.sh
source "$HERE/lib-packages.sh"
refuse_shared_cluster

READY_TIMEOUT="${SSCSI_NODE_READY_TIMEOUT:-120}"
START_US=${EPOCHREALTIME/./}

elapsed() {
  local ms=$(((${EPOCHREALTIME/./} - START_US) / 1000))
  printf '%d.%03ds' $((ms / 1000)) $((ms % 1000))
}

# --- 1. packages -------------------------------------------------------------------------
ensure_packages() {
  ensure_debian_packages "${NODE_PACKAGES[@]}"
  # Anything a package started anyway (not ours: no --config of ours) is stopped.
  local pid
  for pid in $(pgrep -x containerd || true); do
    [[ "$(cmdline_of "$pid")" == *"$CONTAINERD_CONFIG"* ]] && continue
    nlog "stopping containerd (pid $pid) started by the package"
    kill "$pid" || true
  done
}

# --- 3. containerd ------------------------------------------------------------------------
pick_snapshotter() {
  if [[ -n "${SSCSI_SNAPSHOTTER:-}" ]]; then
    SNAPSHOTTER=$SSCSI_SNAPSHOTTER
    return
  fi
  mkdir -p "$CONTAINERD_ROOT"
  local t
  t="$(mktemp -d "$CONTAINERD_ROOT/.overlay-probe.XXXXXX")"
  mkdir -p "$t"/{l,u,w,m}
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"
    SNAPSHOTTER=overlayfs
  else
    SNAPSHOTTER=native
  fi
  rm -rf "$t"
}

write_containerd_config() {
  mkdir -p "$(dirname "$CONTAINERD_CONFIG")" "$(dirname "$CNI_CONF")"
  cat >"$CONTAINERD_CONFIG.tmp" <<EOF
# Written by hack/node-up.sh (secrets-store-csi-py real-node tier). No registry is reachable:
# every image, the sandbox image included, is imported beforehand (hack/images.sh).
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # This VM grants root no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below containerd's
  # own (0), and kubelet asks -998 for sandboxes. Clamp instead of failing every sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAPSHOTTER"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$(dirname "$CNI_CONF")"
  # Pulls go to the loopback registry through one hosts.toml per public registry host
  # (hack/registry.sh hosts): manifests keep their public image names.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CONTAINERD_CERTS_D"
EOF
  if ! cmp -s "$CONTAINERD_CONFIG.tmp" "$CONTAINERD_CONFIG"; then
    CONTAINERD_CONFIG_CHANGED=1
  fi
  mv -f "$CONTAINERD_CONFIG.tmp" "$CONTAINERD_CONFIG"
  cat >"$CNI_CONF.tmp" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
  mv -f "$CNI_CONF.tmp" "$CNI_CONF"
}

CONTAINERD_CONFIG_CHANGED=0
containerd_ready() { ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }

start_containerd() {
  if [[ -n "$(node_pids containerd)" ]] && containerd_ready && ((CONTAINERD_CONFIG_CHANGED == 0)); then
    nlog "containerd already running"
    return
  fi
  local pid
  for pid in $(node_pids containerd); do
    # Containers keep running under their shims; the new containerd picks them up.
    nlog "restarting containerd (pid $pid): unhealthy or its configuration changed"
    kill "$pid" || true
    wait_exit 20 "$pid" || kill -KILL "$pid" || true
  done
  local other="" p
  for p in $(pgrep -x containerd || true); do
    running "$p" && other+="$p "
  done
  if [[ -n "$other" ]]; then
    nlog "another containerd runs (pid $other, not started by node-up): stop it first"
    exit 1
  fi
  local logfile="$LOGS_DIR/containerd.log"
  [[ -f "$logfile" ]] && mv -f "$logfile" "$logfile.1"
  PATH=/usr/sbin:/usr/bin:/sbin:/bin detached /usr/bin/containerd --config "$CONTAINERD_CONFIG" \
    </dev/null >"$logfile" 2>&1 &
  printf '%s\n' "$!" >"$PIDS_DIR/containerd.pid"
  nlog "started containerd (pid $!, snapshotter $SNAPSHOTTER), log: $logfile"
  local deadline=$((SECONDS + 30))
  until containerd_ready; do
    if ((SECONDS >= deadline)) || ! running "$(<"$PIDS_DIR/containerd.pid")"; then
      nlog "containerd did not come up"
      tail -n 30 "$logfile" >&2
      exit 1
    fi
    sleep 0.3
  done
}

# --- 4. mount propagation + networking ------------------------------------------------------
ensure_shared_kubelet_dir() {
  mkdir -p "$KUBELET_ROOT"
  if ! findmnt -n -M "$KUBELET_ROOT" >/dev/null 2>&1; then
    mount --bind "$KUBELET_ROOT" "$KUBELET_ROOT"
  fi
  mount --make-rshared "$KUBELET_ROOT"
}

ensure_node_ip() {
  if ! ip link show "$NODE_LINK" >/dev/null 2>&1; then
    ip link add "$NODE_LINK" type bridge
  fi
  [[ "$(ip -o addr show dev "$NODE_LINK")" == *"inet $NODE_IP/"* ]] || ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
}

# The apiserver reaches kubelet (logs, exec) by the node's Hostname address first.
ensure_hosts_entry() {
  local line="$NODE_IP $NODE_NAME # sscsi-node (hack/node-up.sh)"
  grep -qxF "$line" /etc/hosts && return
  grep -v '# sscsi-node (hack/node-up.sh)$' /etc/hosts >/etc/hosts.sscsi-node.tmp || true
  printf '%s\n' "$line" >>/etc/hosts.sscsi-node.tmp
  cat /etc/hosts.sscsi-node.tmp >/etc/hosts
  rm -f /etc/hosts.sscsi-node.tmp
}

# Services route through kube-proxy (hack/addons.sh) and the apiserver advertises the node IP, which
# pods reach through their bridge's gateway. Bridged traffic must pass iptables so that replies of a
# Service backend on the same bridge are un-NATed.
ensure_service_network() {
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || modprobe br_netfilter 2>/dev/null || true
  # The DNAT chain of earlier versions (no kube-proxy then) would shadow kube-proxy's rules.
  local hook
  for hook in PREROUTING OUTPUT; do
    while iptables -t nat -D "$hook" -j "$NAT_CHAIN" 2>/dev/null; do :; done
  done
  iptables -t nat -F "$NAT_CHAIN" 2>/dev/null && iptables -t nat -X "$NAT_CHAIN" 2>/dev/null || true
}

# --- 6. kubelet -------------------------------------------------------------------------------
ensure_node_cert() {
  [[ -f "$NODE_DIR/kubelet-client.crt" ]] && return
  nlog "issuing the kubelet client certificate (CN=system:node:$NODE_NAME, O=system:nodes)"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$NODE_DIR/kubelet-client.key" 2>/dev/null
  chmod 600 "$NODE_DIR/kubelet-client.key"
  openssl req -new -key "$NODE_DIR/kubelet-client.key" -subj "/O=system:nodes/CN=system:node:$NODE_NAME" \
    -out "$NODE_DIR/kubelet-client.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
    >"$NODE_DIR/client.ext"
  openssl x509 -req -in "$NODE_DIR/kubelet-client.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$NODE_DIR/client.ext" \
    -out "$NODE_DIR/kubelet-client.crt" 2>/dev/null
  rm -f "$NODE_DIR/kubelet-client.csr" "$NODE_DIR/client.ext"
}

write_kubelet_config() {
  cat >"$NODE_DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: sscsi-node
    cluster:
      server: https://127.0.0.1:$APISERVER_PORT
      certificate-authority: $PKI_DIR/ca.crt
users:
  - name: kubelet
    user:
      client-certificate: $NODE_DIR/kubelet-client.crt
      client-key: $NODE_DIR/kubelet-client.key
contexts:
  - name: kubelet
    context: {cluster: sscsi-node, user: kubelet}
current-context: kubelet
EOF
  chmod 600 "$NODE_DIR/kubelet.kubeconfig"
  # A test box: no systemd (cgroupfs), cgroup v1, no swap accounting, anonymous read access
  # to the kubelet API is fine on loopback; eviction thresholds tiny so a full disk in a VM
  # does not evict the driver.
  local old_config=""
  [[ -f "$NODE_DIR/kubelet-config.yaml" ]] && old_config="$(<"$NODE_DIR/kubelet-config.yaml")"
  cat >"$NODE_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
address: $NODE_IP
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
readOnlyPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
evictionHard: {memory.available: "1Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
protectKernelDefaults: false
resolvConf: /etc/resolv.conf
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: cluster.local
staticPodPath: ""
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
maxPods: 60
EOF
  [[ "$(<"$NODE_DIR/kubelet-config.yaml")" == "$old_config" ]] || KUBELET_CONFIG_CHANGED=1
}
KUBELET_CONFIG_CHANGED=0

kubelet_healthy() {
  [[ "$(curl -sS --max-time 3 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" 2>/dev/null)" == ok ]]
}

# node_ready: Ready=True, reported by the running kubelet (not a stale status from before a restart).
KUBELET_STARTED_AT=0
node_ready() {
  local out status beat
  out="$(kctl get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' \
    2>/dev/null)" || return 1
  read -r status beat <<<"$out"
  [[ "$status" == True ]] || return 1
  [[ -n "$beat" ]] && (($(date -d "$beat" +%s) >= KUBELET_STARTED_AT))
}

start_kubelet() {
  if [[ -n "$(node_pids kubelet)" ]] && kubelet_healthy && ((KUBELET_CONFIG_CHANGED == 0)); then
    nlog "kubelet already running"
    return
  fi
  local pid
  for pid in $(node_pids kubelet); do
    nlog "restarting kubelet (pid $pid): unhealthy or its configuration changed"
    kill "$pid" || true
    wait_exit 20 "$pid" || kill -KILL "$pid" || true
  done
  local logfile="$LOGS_DIR/kubelet.log"
  [[ -f "$logfile" ]] && mv -f "$logfile" "$logfile.1"
  PATH=/usr/sbin:/usr/bin:/sbin:/bin detached "$KUBE_BIN/kubelet" \
    --config="$NODE_DIR/kubelet-config.yaml" \
    --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$KUBELET_ROOT" \
    --cert-dir="$NODE_DIR/kubelet-pki" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --node-labels="sscsi.io/real-node=true" \
    --v="${SSCSI_KUBELET_V:-2}" \
    </dev/null >"$logfile" 2>&1 &
  printf '%s\n' "$!" >"$PIDS_DIR/kubelet.pid"
  KUBELET_STARTED_AT=$(($(date +%s) - 1))
  nlog "started kubelet (pid $!), log: $logfile"
}

wait_node_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT)) pid
  until node_ready; do
    pid="$(node_pids kubelet | head -n1)"
    if [[ -z "$pid" ]]; then
      nlog "kubelet exited"
      tail -n 40 "$LOGS_DIR/kubelet.log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      nlog "node $NODE_NAME not Ready after ${READY_TIMEOUT}s"
      kctl get node "$NODE_NAME" -o yaml 2>&1 | sed -n '/conditions:/,/daemonEndpoints/p' >&2 || true
      tail -n 40 "$LOGS_DIR/kubelet.log" >&2
      exit 1
    fi
    sleep 1
  done
}

main() {
  if [[ $EUID -ne 0 ]]; then
    nlog "must run as root (containerd, kubelet, mounts)"
    exit 1
  fi
  if [[ ! -x "$KUBE_BIN/kubelet" ]]; then
    nlog "missing $KUBE_BIN/kubelet: run 'make tools'"
    exit 1
  fi
  mkdir -p "$LOGS_DIR" "$PIDS_DIR" "$NODE_DIR"
  close_inherited_fds
  ensure_packages
  pick_snapshotter
  write_containerd_config
  ensure_shared_kubelet_dir
  "$HERE/registry.sh" hosts
  "$HERE/registry.sh" up
  start_containerd
  # Images before the kubelet: the sandbox image must be present (nothing can be pulled).
  # SSCSI_NODE_IMAGES="pause busybox driver ..." (or empty: all) imports more for manual use.
  local -a images
  read -r -a images <<<"${SSCSI_NODE_IMAGES-pause busybox}"
  SSCSI_SNAPSHOTTER=$SNAPSHOTTER "$HERE/images.sh" import "${images[@]}" >/dev/null
  # The apiserver listens beyond loopback and advertises the node IP: the `kubernetes` Service's
  # endpoint is then an address pods reach (through kube-proxy), with no DNAT of our own.
  ensure_node_ip
  env "${NODE_CLUSTER_ENV[@]}" "$HERE/cluster-up.sh" >/dev/null
  ensure_hosts_entry
  ensure_service_network
  ensure_node_cert
  write_kubelet_config
  start_kubelet
  wait_node_ready
  # Cluster add-ons a real cluster has: kube-proxy and CoreDNS.
  "$HERE/addons.sh" up
  nlog "node $NODE_NAME Ready after $(elapsed); kubeconfig $KUBECONFIG_FILE; logs in $LOGS_DIR"
  printf '%s\n' "$KUBECONFIG_FILE"
}

# Sourced (hack/node-component.sh sources this file for start_containerd / start_kubelet): functions only.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
