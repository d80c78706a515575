#!/usr/bin/env bash
# Kill, start or check one process of the real node (hack/node-up.sh), for fault injection (tests/chaos):
#   hack/node-component.sh kill   COMPONENT   SIGKILL; returns at once
#   hack/node-component.sh start  COMPONENT   when it does not run: start it exactly as node-up does; then
#                                             wait until it serves (idempotent: a running one is only waited for)
#   hack/node-component.sh status COMPONENT   exit 0 when it runs and serves
# COMPONENT: etcd | kube-apiserver | kubelet | containerd.
# The commands and flags are the node scripts' own: this file sources hack/cluster-up.sh (start_etcd,
# start_apiserver, with the node's NODE_CLUSTER_ENV) and hack/node-up.sh (start_containerd, start_kubelet).
# Ports: the running cluster's ($SSCSI_NODE_CLUSTER_DIR/ports.env). Containers keep running under their
# shims while containerd is down; pods keep running while kubelet is.
# A restarted component's previous log is kept as logs/<component>.log.<UTC time>, so a run that greps
# the logs loses none of them to the .1 rotation.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Only a node that is up: its ports are then the running cluster's (ports.env, see hack/lib-node.sh).
if [[ ! -f "${SSCSI_NODE_CLUSTER_DIR:-/tmp/sscsi-node-cluster}/ports.env" ]]; then
  printf '[node] %s: the node is not up (no ports.env; hack/node-up.sh)\n' "${0##*/}" >&2
  exit 1
fi
# shellcheck source=hack/lib-node.sh
source "$HERE/lib-node.sh"
export "${NODE_CLUSTER_ENV[@]}"
# shellcheck source=hack/cluster-up.sh
source "$HERE/cluster-up.sh"
# shellcheck source=hack/node-up.sh
source "$HERE/node-up.sh"
refuse_shared_cluster

START_TIMEOUT="${SSCSI_COMPONENT_START_TIMEOUT:-150}"

# cluster-up's fail() stops the whole control plane: here a failed start only fails this command.
fail() {
  shift
  log "$*"
  return 1
}

pids_of() {
  case $1 in
    etcd | kube-apiserver) our_pids | awk -v c="$1" '$2 == c { print $1 }' ;;
    kubelet | containerd) node_pids "$1" ;;
  esac
}

serves() {
  case $1 in
    etcd) etcd_healthy ;;
    kube-apiserver) apiserver_ready ;;
    kubelet) kubelet_healthy ;;
    containerd) containerd_ready ;;
  esac
}

keep_log() {
  local file="$LOGS_DIR/$1.log"
  [[ -f "$file" ]] || return 0
  mv -f "$file" "$file.$(date -u +%Y%m%dT%H%M%S.%N)"
}

launch() {
  keep_log "$1"
  case $1 in
    etcd | kube-apiserver)
      # Not cluster-up's lock (take_lock): held through the wait, it would keep etcd from starting while
      # an apiserver started before it waits for etcd. Starts of one component exclude each other.
      exec {LOCK_FD}>"$CLUSTER_DIR/$1.start.lock"
      flock -w 300 "$LOCK_FD"
      [[ -z "$(pids_of "$1")" ]] || return 0 # started by another call meanwhile
      if [[ $1 == etcd ]]; then start_etcd; else start_apiserver; fi
      ;;
    kubelet) start_kubelet ;;
    containerd)
      SNAPSHOTTER="$(sed -n 's/^ *snapshotter = "\(.*\)"$/\1/p' "$CONTAINERD_CONFIG")"
      start_containerd
      ;;
  esac
}

# start COMPONENT: launched when no process of it runs, again if it dies before serving (an apiserver
# started while etcd is down may give up), until it serves or START_TIMEOUT passes.
start_component() {
  local component=$1 deadline=$((SECONDS + START_TIMEOUT))
  until serves "$component"; do
    if [[ -z "$(pids_of "$component")" ]]; then
      nlog "starting $component"
      launch "$component" || nlog "$component did not come up yet"
    fi
    if ((SECONDS >= deadline)); then
      nlog "$component does not serve after ${START_TIMEOUT}s (log: $LOGS_DIR/$component.log)"
      return 1
    fi
    sleep 0.5
  done
}

kill_component() {
  local -a pids
  mapfile -t pids < <(pids_of "$1")
  if ((${#pids[@]} == 0)); then
    nlog "$1 is not running"
    return 0
  fi
  nlog "SIGKILL $1 (pid ${pids[*]})"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait_exit 10 "${pids[@]}"
}

main_component() {
  local action=${1:-} component=${2:-}
  case $component in
    etcd | kube-apiserver | kubelet | containerd) ;;
    *)
      sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
      exit 2
      ;;
  esac
  close_inherited_fds
  mkdir -p "$LOGS_DIR" "$PIDS_DIR"
  case $action in
    kill) kill_component "$component" ;;
    start) start_component "$component" ;;
    status) [[ -n "$(pids_of "$component")" ]] && serves "$component" ;;
    *)
      sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
      exit 2
      ;;
  esac
}

main_component "$@"
