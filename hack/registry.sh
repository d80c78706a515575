#!/usr/bin/env bash
# The loopback image registry of the real-node tier (distribution's cmd/registry, built by
# `hack/build-tools.sh registry`), and containerd's view of it.
#
#   hack/registry.sh up       start it (idempotent) on $SSCSI_REGISTRY (default 127.0.0.1:5000, plain http)
#   hack/registry.sh down     stop it (the stored images stay in $SSCSI_REGISTRY_DIR for the next run)
#   hack/registry.sh hosts    write containerd's hosts.toml files (see below); node-up calls it
#   hack/registry.sh status   exit 0 when it answers /v2/
#
# Images keep their public names everywhere (CSV, catalog, Deployments). containerd's registry
# configuration (`config_path`, one hosts.toml per registry host) sends every pull for the hosts in
# MIRRORED_HOSTS to the loopback registry, which stores them under the repository path without the
# host: ghcr.io/secrets-store-csi-py/driver:v0.1.0 is pushed as $SSCSI_REGISTRY/secrets-store-csi-py/driver:v0.1.0.
# Nothing is pulled from the internet: a name the registry lacks fails to pull, as on an air-gapped cluster.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-cluster.sh
source "$HERE/lib-cluster.sh" # versions.env, running

REGISTRY="${SSCSI_REGISTRY:-127.0.0.1:5000}"
REGISTRY_DIR="${SSCSI_REGISTRY_DIR:-/var/lib/sscsi-registry}"
REGISTRY_BIN="$TOOLS_CACHE/tools/bin/registry"
RUN_DIR=/run/sscsi-registry
PID_FILE="$RUN_DIR/registry.pid"
LOG_FILE="${SSCSI_REGISTRY_LOG:-/var/log/sscsi-registry.log}"
CERTS_D="${SSCSI_CONTAINERD_CERTS_D:-/etc/containerd/certs.d}"
# Registry hosts the committed manifests name (bundle, catalog, OLM, sidecars, base images).
MIRRORED_HOSTS=(ghcr.io quay.io registry.k8s.io docker.io)

rlog() { printf '[registry] %s\n' "$*" >&2; }

answering() { curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null 2>&1; }

running_pid() {
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ -n "$pid" && -e "/proc/$pid" ]] || return 1
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == "$REGISTRY_BIN serve "* ]] || return 1
  printf '%s\n' "$pid"
}

write_config() {
  mkdir -p "$RUN_DIR" "$REGISTRY_DIR"
  cat >"$RUN_DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR
  delete:
    enabled: true
http:
  addr: $REGISTRY
  secret: sscsi-loopback-registry
EOF
}

up() {
  if running_pid >/dev/null && answering; then
    rlog "already running on $REGISTRY"
    return
  fi
  if [[ ! -x "$REGISTRY_BIN" ]]; then
    rlog "missing $REGISTRY_BIN: run 'hack/build-tools.sh registry'"
    exit 1
  fi
  if answering; then
    rlog "something else answers on $REGISTRY (not started by this script): using it"
    return
  fi
  write_config
  mkdir -p "$(dirname "$LOG_FILE")"
  # Not the caller's open files (a lock such as `flock /run/sscsi-node.lock`) in the daemon.
  local fd
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2 && fd != 255)) && eval "exec $fd>&-" 2>/dev/null
  done
  # OTEL_TRACES_EXPORTER=none: the registry would otherwise try to export traces to a collector.
  OTEL_TRACES_EXPORTER=none setsid "$REGISTRY_BIN" serve "$RUN_DIR/config.yml" </dev/null >"$LOG_FILE" 2>&1 &
  local pid=$! deadline=$((SECONDS + 20))
  printf '%s\n' "$pid" >"$PID_FILE"
  # running (lib-cluster.sh), not running_pid: until the child has exec'd, its command line is still the shell's.
  until answering; do
    if ((SECONDS >= deadline)) || ! running "$pid"; then
      rlog "registry did not come up; log $LOG_FILE:"
      tail -n 20 "$LOG_FILE" >&2
      exit 1
    fi
    sleep 0.2
  done
  rlog "serving on http://$REGISTRY (storage $REGISTRY_DIR, pid $(cat "$PID_FILE"))"
}

down() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid"
    for _ in $(seq 50); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    [[ -e /proc/$pid ]] && kill -KILL "$pid"
    rlog "stopped (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

hosts() {
  local h
  for h in "${MIRRORED_HOSTS[@]}"; do
    mkdir -p "$CERTS_D/$h"
    cat >"$CERTS_D/$h/hosts.toml.tmp" <<EOF
# Written by hack/registry.sh: pulls of $h/* are served by the loopback registry (plain http).
server = "https://$h"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
EOF
    mv -f "$CERTS_D/$h/hosts.toml.tmp" "$CERTS_D/$h/hosts.toml"
  done
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  hosts) hosts ;;
  status) answering ;;
  *)
    echo "usage: $0 up|down|hosts|status" >&2
    exit 2
    ;;
esac
