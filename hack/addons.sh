#!/usr/bin/env bash
# Cluster add-ons of the real-node tier, as a real cluster has them:
#   kube-proxy  the same Kubernetes build (hack/build-tools.sh kube-proxy), iptables mode, a host
#               process beside kubelet (as kubelet is), its own client certificate
#               (CN=system:kube-proxy: the built-in system:node-proxier binding applies)
#   CoreDNS     Deployment + Service kube-dns (10.0.0.10) in kube-system, image
#               registry.k8s.io/coredns/coredns (hack/live-images.sh, pulled through the loopback registry)
#
#   hack/addons.sh up     start/apply both (idempotent) and wait until a pod can resolve Services
#   hack/addons.sh down   stop kube-proxy and remove its rules (node-down calls it)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-node.sh
source "$HERE/lib-node.sh"

PROXY_BIN="$KUBE_BIN/kube-proxy"
PROXY_DIR="$NODE_DIR/kube-proxy"
PROXY_PID="$PIDS_DIR/kube-proxy.pid"

alog() { printf '[addons] %s\n' "$*" >&2; }

# The Service range (cluster-up.sh's --service-cluster-ip-range). A packet to it that kube-proxy has not
# DNATed (a Service created a moment ago, before its rules sync) would otherwise leave by the default
# route, and this VM's network answers anything there: the apiserver's availability check of OLM's
# packageserver once got a 404 from outside and kept that keep-alive connection, so the APIService
# never became Available. Refused here instead, a client retries and then meets kube-proxy's DNAT
# (nat runs before filter, so translated packets no longer match).
SERVICE_CIDR="10.0.0.0/24"
GUARD_CHAIN="SSCSI-SVC-GUARD"

guard_services() {
  iptables -N "$GUARD_CHAIN" 2>/dev/null || true
  iptables -C "$GUARD_CHAIN" -d "$SERVICE_CIDR" -j REJECT 2>/dev/null ||
    iptables -A "$GUARD_CHAIN" -d "$SERVICE_CIDR" -j REJECT
  local hook
  for hook in OUTPUT FORWARD; do
    iptables -C "$hook" -j "$GUARD_CHAIN" 2>/dev/null || iptables -A "$hook" -j "$GUARD_CHAIN"
  done
}

unguard_services() {
  local hook
  for hook in OUTPUT FORWARD; do
    while iptables -D "$hook" -j "$GUARD_CHAIN" 2>/dev/null; do :; done
  done
  iptables -F "$GUARD_CHAIN" 2>/dev/null || true
  iptables -X "$GUARD_CHAIN" 2>/dev/null || true
}

proxy_pid() {
  local pid
  pid="$(cat "$PROXY_PID" 2>/dev/null)" || return 1
  [[ -n "$pid" && "$(cmdline_of "$pid")" == "$PROXY_BIN "* ]] || return 1
  printf '%s\n' "$pid"
}

ensure_proxy_cert() {
  mkdir -p "$PROXY_DIR"
  if [[ ! -f "$PROXY_DIR/client.crt" ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PROXY_DIR/client.key" 2>/dev/null
    chmod 600 "$PROXY_DIR/client.key"
    openssl req -new -key "$PROXY_DIR/client.key" -subj "/CN=system:kube-proxy" -out "$PROXY_DIR/client.csr"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
      >"$PROXY_DIR/client.ext"
    openssl x509 -req -in "$PROXY_DIR/client.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$PROXY_DIR/client.ext" \
      -out "$PROXY_DIR/client.crt" 2>/dev/null
    rm -f "$PROXY_DIR/client.csr" "$PROXY_DIR/client.ext"
  fi
  cat >"$PROXY_DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: sscsi-node
    cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$PKI_DIR/ca.crt"}
users:
  - name: kube-proxy
    user: {client-certificate: "$PROXY_DIR/client.crt", client-key: "$PROXY_DIR/client.key"}
contexts:
  - name: kube-proxy
    context: {cluster: sscsi-node, user: kube-proxy}
current-context: kube-proxy
EOF
  chmod 600 "$PROXY_DIR/kubeconfig"
}

start_proxy() {
  if proxy_pid >/dev/null; then
    alog "kube-proxy already running"
    return
  fi
  if [[ ! -x "$PROXY_BIN" ]]; then
    alog "missing $PROXY_BIN: run 'hack/build-tools.sh kube-proxy'"
    exit 1
  fi
  ensure_proxy_cert
  cat >"$PROXY_DIR/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$PROXY_DIR/kubeconfig"}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
# Service traffic is SNATed: a backend on the same bridge as its client answers through the host,
# which undoes the DNAT (and a pod reaching itself through its Service works).
iptables: {masqueradeAll: true, syncPeriod: 10s, minSyncPeriod: 0s}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
EOF
  local logfile="$LOGS_DIR/kube-proxy.log"
  [[ -f "$logfile" ]] && mv -f "$logfile" "$logfile.1"
  PATH=/usr/sbin:/usr/bin:/sbin:/bin setsid "$PROXY_BIN" --config="$PROXY_DIR/config.yaml" --v=1 \
    </dev/null >"$logfile" 2>&1 &
  local pid=$! deadline=$((SECONDS + 30))
  printf '%s\n' "$pid" >"$PROXY_PID"
  alog "started kube-proxy (pid $pid), log: $logfile"
  # running, not proxy_pid: until the child has exec'd, its command line is still the shell's.
  until [[ "$(curl -sS --max-time 2 http://127.0.0.1:10256/healthz 2>/dev/null)" == *lastUpdated* ]] &&
    iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https'; do
    if ((SECONDS >= deadline)) || ! running "$pid"; then
      alog "kube-proxy did not program the kubernetes Service"
      tail -n 30 "$logfile" >&2
      exit 1
    fi
    sleep 0.5
  done
}

coredns_manifest() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loop
        forward . /etc/resolv.conf
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
        - name: coredns
          image: registry.k8s.io/coredns/coredns:$COREDNS_VERSION
          args: ["-conf", "/etc/coredns/Corefile"]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
          livenessProbe:
            httpGet: {path: /health, port: 8080}
          readinessProbe:
            httpGet: {path: /ready, port: 8181}
          resources: {requests: {cpu: 10m, memory: 30Mi}}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
        - name: config
          configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $CLUSTER_DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

apply_coredns() {
  "$HERE/live-images.sh" coredns
  coredns_manifest | kctl apply -f - >/dev/null
  if ! kctl -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null; then
    alog "CoreDNS not ready:"
    kctl -n kube-system get pods -l k8s-app=kube-dns -o wide >&2 || true
    exit 1
  fi
  alog "CoreDNS ready on $CLUSTER_DNS_IP"
}

down() {
  local pid
  if pid="$(proxy_pid)"; then
    kill "$pid" 2>/dev/null || true
    wait_exit 10 "$pid" || kill -KILL "$pid" 2>/dev/null || true
    alog "stopped kube-proxy (pid $pid)"
  fi
  rm -f "$PROXY_PID"
  # kube-proxy's own cleanup removes every KUBE-* chain and rule it wrote.
  [[ -x "$PROXY_BIN" ]] && "$PROXY_BIN" --cleanup >/dev/null 2>&1 || true
  unguard_services
}

case "${1:-up}" in
  up)
    close_inherited_fds
    guard_services
    start_proxy
    apply_coredns
    ;;
  down) down ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
