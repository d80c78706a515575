# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Shared by hack/cluster-up.sh and hack/cluster-down.sh: paths, ports and process helpers
# for the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler).
#
# Everything listens on loopback only. Ports (override with the environment variable shown):
#   etcd client              127.0.0.1:23790  SSCSI_ETCD_PORT
#   etcd peer                127.0.0.1:23800  SSCSI_ETCD_PEER_PORT
#   kube-apiserver           127.0.0.1:6443   SSCSI_APISERVER_PORT
#   kube-controller-manager  127.0.0.1:10357  SSCSI_KCM_PORT        (https /healthz)
#   kube-scheduler           127.0.0.1:10359  SSCSI_SCHEDULER_PORT  (https /healthz)
#
# Layout of $SSCSI_CLUSTER_DIR (default /tmp/sscsi-cluster):
#   admin.kubeconfig  pki/  etcd/ (data)  logs/<component>.log  logs/audit.log  pids/<component>.pid
#   ports.env (ports of the running cluster)  audit-policy.yaml  cluster.lock

LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$LIB_DIR/versions.env"

KUBE_BIN="$TOOLS_CACHE/kube-$KUBE_VERSION/bin"
CLUSTER_DIR="$(realpath -m "${SSCSI_CLUSTER_DIR:-/tmp/sscsi-cluster}")"
PKI_DIR="$CLUSTER_DIR/pki"
LOGS_DIR="$CLUSTER_DIR/logs"
PIDS_DIR="$CLUSTER_DIR/pids"
ETCD_DATA_DIR="$CLUSTER_DIR/etcd"
KUBECONFIG_FILE="$CLUSTER_DIR/admin.kubeconfig"
PORTS_FILE="$CLUSTER_DIR/ports.env"
LOCK_FILE="$CLUSTER_DIR/cluster.lock"

ETCD_PORT="${SSCSI_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${SSCSI_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${SSCSI_APISERVER_PORT:-6443}"
KCM_PORT="${SSCSI_KCM_PORT:-10357}"
SCHEDULER_PORT="${SSCSI_SCHEDULER_PORT:-10359}"

# Start order; cluster-down stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
PROC_COMPONENT=""

log() { printf '[cluster] %s\n' "$*" >&2; }

# Take the per-directory lock so that concurrent cluster-up/cluster-down calls serialize.
take_lock() {
  mkdir -p "$CLUSTER_DIR"
  exec {LOCK_FD}>"$LOCK_FILE"
  if ! flock -w 600 "$LOCK_FD"; then
    log "could not lock $LOCK_FILE within 600s"
    exit 1
  fi
}

# proc_component PID: succeed and set PROC_COMPONENT when PID runs our build of a component
# (any version under $TOOLS_CACHE) with a command line that refers to this cluster directory.
# Builtins only, no subshell: it runs once per process on the machine.
proc_component() {
  local pid=$1 argv0 component
  local -a args=()
  mapfile -d '' -t args 2>/dev/null <"/proc/$pid/cmdline" || return 1
  ((${#args[@]})) || return 1
  argv0=${args[0]}
  [[ "$argv0" == "$TOOLS_CACHE"/kube-*/bin/* ]] || return 1
  component=${argv0##*/}
  [[ " ${COMPONENTS[*]} " == *" $component "* ]] || return 1
  [[ "${args[*]}" == *"$CLUSTER_DIR/"* ]] || return 1
  PROC_COMPONENT=$component
}

# component_pid COMPONENT: print the pid from the pid file when that process is alive and ours.
component_pid() {
  local component=$1 pid
  [[ -f "$PIDS_DIR/$component.pid" ]] || return 1
  pid="$(<"$PIDS_DIR/$component.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  proc_component "$pid" && [[ "$PROC_COMPONENT" == "$component" ]] || return 1
  printf '%s\n' "$pid"
}

# our_pids: every live process of ours, found by a scan of /proc (so it also catches
# components whose pid file was lost). One "pid component" pair per line.
our_pids() {
  local dir pid
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    if proc_component "$pid"; then
      printf '%s %s\n' "$pid" "$PROC_COMPONENT"
    fi
  done
}

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# https_get PORT PATH: GET over TLS with the admin client certificate; prints the body.
https_get() {
  curl -sS --fail --max-time 5 \
    --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" \
    "https://127.0.0.1:$1$2"
}

# apiserver_ready [PORT]: /readyz answers "ok".
apiserver_ready() {
  local body
  body="$(https_get "${1:-$APISERVER_PORT}" /readyz 2>/dev/null)" || return 1
  [[ "$body" == ok ]]
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMPONENT COMMAND...: poll COMMAND every 0.5 s;
# give up early when COMPONENT's process (its pid file) has died. `running`, not component_pid: until
# a daemon just started with `cmd &` has exec'd, its command line is still the shell's (a fresh-clone
# make test failed on that race: "kube-apiserver exited while waiting", with an empty log).
wait_for() {
  local what=$1 timeout=$2 component=$3 pid
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    pid="$(cat "$PIDS_DIR/$component.pid" 2>/dev/null || true)"
    if ! running "$pid"; then
      log "$component exited while waiting for $what"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# show_log COMPONENT [LINES]: the tail of a component's log on stderr.
show_log() {
  local file="$LOGS_DIR/$1.log"
  [[ -f "$file" ]] || return 0
  log "last ${2:-40} lines of $file:"
  tail -n "${2:-40}" "$file" >&2
}

# running PID: the process exists and is not a zombie (a zombie has exited; init reaps it).
running() {
  local state=""
  [[ "$1" =~ ^[0-9]+$ ]] || return 1 # "" would read /proc/stat
  { read -r _ _ state _ <"/proc/$1/stat"; } 2>/dev/null || return 1
  [[ "$state" != Z ]]
}

# wait_exit SECONDS PID...: wait until none of the PIDs is running.
wait_exit() {
  local deadline=$((SECONDS + $1)) pid alive
  shift
  while true; do
    alive=0
    for pid in "$@"; do
      if running "$pid"; then
        alive=1
        break
      fi
    done
    ((alive)) || return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# stop_all TIMEOUT_SECONDS: SIGTERM every process of ours (the clients of etcd first, etcd
# last), SIGKILL what is left after the timeout, then remove the pid files.
# Fails only if something survives SIGKILL. Sets STOPPED to the number of processes stopped.
STOPPED=0
stop_all() {
  local timeout=${1:-20} pid component phase
  local -a all=()
  for phase in clients etcd; do
    local -a pids=()
    while read -r pid component; do
      if [[ $phase == etcd && $component != etcd ]] || [[ $phase != etcd && $component == etcd ]]; then
        continue
      fi
      log "stopping $component (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    done < <(our_pids)
    ((${#pids[@]})) || continue
    all+=("${pids[@]}")
    wait_exit "$timeout" "${pids[@]}" && continue
    for pid in "${pids[@]}"; do
      if running "$pid"; then
        log "pid $pid did not stop within ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    wait_exit 5 "${pids[@]}" || true
  done
  local left
  left="$(our_pids)"
  if [[ -n "$left" ]]; then
    log "still running after SIGKILL:"
    printf '%s\n' "$left" >&2
    return 1
  fi
  rm -f "$PIDS_DIR"/*.pid "$PORTS_FILE"
  STOPPED=${#all[@]}
  if ((STOPPED == 0)); then
    log "nothing was running in $CLUSTER_DIR"
    return 0
  fi
  # Exited processes stay zombies until init reaps them; give it a moment so that a
  # `pgrep` right after this shows nothing.
  local deadline=$((SECONDS + 5))
  for pid in "${all[@]}"; do
    while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.1; done
  done
  return 0
}
