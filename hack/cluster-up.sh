#!/usr/bin/env bash
# Start the local control plane: etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler, built by `hack/build-tools.sh kube`, as background processes on loopback.
#
# Idempotent: when every component of $SSCSI_CLUSTER_DIR is running and /readyz says ok,
# it only prints the kubeconfig path. A partly running or unhealthy cluster is stopped and
# started again (etcd data, pki and logs are kept; see hack/cluster-down.sh --purge).
#
# stdout: the admin kubeconfig path (KUBECONFIG="$(hack/cluster-up.sh)" works).
# stderr: progress, the logs directory and, on failure, the tail of the failing log.
# Ports and layout: see hack/lib-cluster.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-cluster.sh
source "$HERE/lib-cluster.sh"

READY_TIMEOUT="${SSCSI_READY_TIMEOUT:-90}"
SA_ISSUER="https://kubernetes.default.svc.cluster.local"
# The real-node tier (hack/node-up.sh) listens beyond loopback and advertises an address pods reach,
# kept in the kubernetes Service's endpoints by the lease reconciler. Defaults: loopback only.
BIND_ADDRESS="${SSCSI_APISERVER_BIND_ADDRESS:-127.0.0.1}"
ADVERTISE_ADDRESS="${SSCSI_APISERVER_ADVERTISE_ADDRESS:-127.0.0.1}"
ENDPOINT_RECONCILER="${SSCSI_ENDPOINT_RECONCILER:-none}"
AUDIT_POLICY="$CLUSTER_DIR/audit-policy.yaml"

# --- the running cluster ---------------------------------------------------------------

# cluster_running: all components alive, started with the pinned version, apiserver ready.
cluster_running() {
  local component
  [[ -f "$PORTS_FILE" ]] || return 1
  for component in "${COMPONENTS[@]}"; do
    component_pid "$component" >/dev/null || return 1
  done
  local RUNNING_APISERVER_PORT="" RUNNING_KUBE_VERSION="" RUNNING_ADVERTISE=""
  # shellcheck source=/dev/null
  source "$PORTS_FILE"
  [[ "$RUNNING_KUBE_VERSION" == "$KUBE_VERSION" ]] || return 1
  [[ "${RUNNING_ADVERTISE:-127.0.0.1 127.0.0.1 none}" == "$BIND_ADDRESS $ADVERTISE_ADDRESS $ENDPOINT_RECONCILER" ]] || return 1
  apiserver_ready "$RUNNING_APISERVER_PORT" || return 1
  if [[ "$RUNNING_APISERVER_PORT" != "$APISERVER_PORT" ]]; then
    log "note: the running cluster serves on port $RUNNING_APISERVER_PORT, not $APISERVER_PORT;" \
      "run hack/cluster-down.sh first to change it"
  fi
}

# --- certificates ----------------------------------------------------------------------

write_openssl_config() {
  cat >"$1" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = @apiserver_names
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[apiserver_names]
IP.1 = 127.0.0.1
IP.2 = 10.0.0.1
DNS.1 = localhost
DNS.2 = kubernetes
DNS.3 = kubernetes.default
DNS.4 = kubernetes.default.svc
DNS.5 = kubernetes.default.svc.cluster.local
EOF
}

new_key() {
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

# new_ca DIR NAME CN
new_ca() {
  new_key "$1/$2.key"
  openssl req -x509 -new -key "$1/$2.key" -subj "/CN=$3" -days 3650 -sha256 \
    -config "$1/openssl.cnf" -extensions ca -out "$1/$2.crt"
}

# new_cert DIR NAME CA SUBJECT EXTENSIONS
new_cert() {
  local dir=$1 name=$2 ca=$3 subject=$4 extensions=$5
  new_key "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "$subject" -config "$dir/openssl.cnf" -out "$dir/$name.csr"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$dir/openssl.cnf" -extensions "$extensions" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr"
}

# ensure_pki: generate the certificates and keys once; later runs reuse them.
ensure_pki() {
  [[ -f "$PKI_DIR/.complete" ]] && return 0
  log "generating certificates in $PKI_DIR"
  local tmp="$PKI_DIR.tmp.$$"
  rm -rf "$tmp" "$PKI_DIR"
  mkdir -m 700 "$tmp"
  write_openssl_config "$tmp/openssl.cnf"
  new_ca "$tmp" ca sscsi-local-ca
  new_cert "$tmp" apiserver ca "/CN=kube-apiserver" server
  new_cert "$tmp" admin ca "/O=system:masters/CN=admin" client
  new_cert "$tmp" apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" client
  # requestheader (front proxy) pair: lets aggregated API servers trust the apiserver.
  new_ca "$tmp" front-proxy-ca sscsi-front-proxy-ca
  new_cert "$tmp" front-proxy-client front-proxy-ca "/CN=front-proxy-client" client
  # service-account token signing key pair
  new_key "$tmp/sa.key"
  openssl pkey -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null
  rm -f "$tmp/openssl.cnf"
  touch "$tmp/.complete"
  mv "$tmp" "$PKI_DIR"
}

# --- configuration files ---------------------------------------------------------------

write_kubeconfig() {
  local tmp="$KUBECONFIG_FILE.tmp.$$"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: sscsi
    cluster:
      server: https://127.0.0.1:$APISERVER_PORT
      certificate-authority: $PKI_DIR/ca.crt
users:
  - name: admin
    user:
      client-certificate: $PKI_DIR/admin.crt
      client-key: $PKI_DIR/admin.key
contexts:
  - name: sscsi
    context:
      cluster: sscsi
      user: admin
      namespace: default
current-context: sscsi
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$KUBECONFIG_FILE"
}

# Metadata for every request (who, what, user agent, response code; no bodies).
# RequestReceived is omitted: one line per request, plus ResponseStarted for watches.
write_audit_policy() {
  cat >"$AUDIT_POLICY" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
EOF
}

write_ports_file() {
  cat >"$PORTS_FILE" <<EOF
RUNNING_KUBE_VERSION=$KUBE_VERSION
RUNNING_APISERVER_PORT=$APISERVER_PORT
RUNNING_ETCD_PORT=$ETCD_PORT
RUNNING_ETCD_PEER_PORT=$ETCD_PEER_PORT
RUNNING_KCM_PORT=$KCM_PORT
RUNNING_SCHEDULER_PORT=$SCHEDULER_PORT
RUNNING_ADVERTISE="$BIND_ADDRESS $ADVERTISE_ADDRESS $ENDPOINT_RECONCILER"
EOF
}

# --- processes -------------------------------------------------------------------------

# start COMPONENT ARGS...: run in its own session (survives the calling shell), output to
# logs/COMPONENT.log (the previous run's log is kept as COMPONENT.log.1), pid to pids/.
start() {
  local component=$1
  shift
  local logfile="$LOGS_DIR/$component.log"
  [[ -f "$logfile" ]] && mv -f "$logfile" "$logfile.1"
  # The lock descriptor is closed in the child: a daemon must not hold the lock.
  setsid "$KUBE_BIN/$component" "$@" </dev/null >"$logfile" 2>&1 {LOCK_FD}>&- &
  printf '%s\n' "$!" >"$PIDS_DIR/$component.pid"
  log "started $component (pid $!), log: $logfile"
}

fail() {
  local component=$1
  shift
  log "$*"
  show_log "$component" 40
  log "stopping what was started; logs stay in $LOGS_DIR"
  stop_all 10 || true
  exit 1
}

etcd_healthy() {
  local body
  body="$(curl -sS --fail --max-time 3 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null)" || return 1
  [[ "$body" == *'"health":"true"'* ]]
}

healthz_ok() {
  local body
  body="$(curl -sS --fail --max-time 3 --insecure "https://127.0.0.1:$1/healthz" 2>/dev/null)" || return 1
  [[ "$body" == ok ]]
}

default_sa_exists() {
  https_get "$APISERVER_PORT" /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1
}

start_etcd() {
  # Test data is disposable: an etcd of another version may refuse the old data dir
  # (e.g. a 3.6 server cannot open data written by 3.7), so start fresh when it changed.
  local version stamp="$ETCD_DATA_DIR/.sscsi-etcd-version"
  version="$("$KUBE_BIN/etcd" --version 2>/dev/null)"
  version="${version%%$'\n'*}"
  if [[ -d "$ETCD_DATA_DIR/member" && "$(cat "$stamp" 2>/dev/null)" != "$version" ]]; then
    log "etcd changed to '$version': discarding old test data in $ETCD_DATA_DIR"
    rm -rf "$ETCD_DATA_DIR"
  fi
  mkdir -p "$ETCD_DATA_DIR"
  echo "$version" > "$stamp"
  start etcd \
    --name=sscsi \
    --data-dir="$ETCD_DATA_DIR" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="sscsi=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true
  wait_for "etcd /health" 30 etcd etcd_healthy || fail etcd "etcd did not become healthy"
}

start_apiserver() {
  start kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$BIND_ADDRESS" \
    --secure-port="$APISERVER_PORT" \
    --advertise-address="$ADVERTISE_ADDRESS" \
    --tls-cert-file="$PKI_DIR/apiserver.crt" \
    --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$PKI_DIR/sa.pub" \
    --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --api-audiences="$SA_ISSUER" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --endpoint-reconciler-type="$ENDPOINT_RECONCILER" \
    --requestheader-client-ca-file="$PKI_DIR/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI_DIR/front-proxy-client.key" \
    --audit-policy-file="$AUDIT_POLICY" \
    --audit-log-path="$LOGS_DIR/audit.log" \
    --audit-log-format=json \
    --audit-log-mode=blocking \
    --audit-log-maxsize=200 \
    --audit-log-maxbackup=2 \
    --v=1
  wait_for "kube-apiserver /readyz" "$READY_TIMEOUT" kube-apiserver apiserver_ready ||
    fail kube-apiserver "kube-apiserver did not become ready"
}

start_controller_manager() {
  start kube-controller-manager \
    --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" \
    --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=false \
    --root-ca-file="$PKI_DIR/ca.crt" \
    --service-account-private-key-file="$PKI_DIR/sa.key" \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
    --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --kube-api-qps=1000 \
    --kube-api-burst=1000 \
    --flex-volume-plugin-dir="$CLUSTER_DIR/flexvolume" \
    --v=1
}

start_scheduler() {
  start kube-scheduler \
    --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" \
    --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --bind-address=127.0.0.1 \
    --secure-port="$SCHEDULER_PORT" \
    --leader-elect=false \
    --v=1
}

# --- main ------------------------------------------------------------------------------

print_result() {
  local ms=$(((${EPOCHREALTIME/./} - START_US) / 1000))
  log "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s; logs in $LOGS_DIR"
  printf '%s\n' "$KUBECONFIG_FILE"
}

main() {
  START_US=${EPOCHREALTIME/./}
  take_lock
  if cluster_running; then
    log "already running (kube $KUBE_VERSION)"
    print_result
    return 0
  fi
  if [[ -n "$(our_pids)" ]]; then
    log "cluster in $CLUSTER_DIR is partly running or not ready: restarting it"
    stop_all 20
  fi
  local component port
  for component in "${COMPONENTS[@]}"; do
    if [[ ! -x "$KUBE_BIN/$component" ]]; then
      log "missing $KUBE_BIN/$component: run 'make tools' (hack/build-tools.sh kube)"
      exit 1
    fi
  done
  for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHEDULER_PORT"; do
    if port_in_use "$port"; then
      log "127.0.0.1:$port is already in use by another process (see hack/lib-cluster.sh for the" \
        "SSCSI_*_PORT overrides)"
      exit 1
    fi
  done
  mkdir -p "$LOGS_DIR" "$PIDS_DIR"
  rm -f "$PIDS_DIR"/*.pid
  ensure_pki
  write_kubeconfig
  write_audit_policy

  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  # The default ServiceAccount is made by kube-controller-manager: proves it works.
  wait_for "the default ServiceAccount (kube-controller-manager)" 60 kube-controller-manager \
    default_sa_exists || fail kube-controller-manager "kube-controller-manager did not create it"
  wait_for "kube-controller-manager /healthz" 30 kube-controller-manager healthz_ok "$KCM_PORT" ||
    fail kube-controller-manager "kube-controller-manager is not healthy"
  wait_for "kube-scheduler /healthz" 30 kube-scheduler healthz_ok "$SCHEDULER_PORT" ||
    fail kube-scheduler "kube-scheduler is not healthy"
  write_ports_file
  print_result
}

# Sourced (hack/node-component.sh sources this file for start_etcd / start_apiserver): functions only.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
