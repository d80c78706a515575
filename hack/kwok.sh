#!/usr/bin/env bash
# Fake nodes for the local control plane: run the kwok controller (built by
# `hack/build-tools.sh kwok`) against $SSCSI_CLUSTER_DIR's cluster.
#
#   hack/kwok.sh up     start it (idempotent); pid in pids/kwok.pid, log in logs/kwok.log
#   hack/kwok.sh down   stop it (SIGTERM, then SIGKILL after 10 s)
#
# kwok manages only nodes annotated kwok.x-k8s.io/node=fake, so real or emulated nodes of other
# tests are left alone. Its stages (written to kwok/stages.yaml) make such a node Ready with a
# heartbeat every 10 s, make every pod bound to it Running and Ready (no containers run), and
# finish the deletion of its pods. Create a node with:
#   kubectl apply -f - <<<'{"apiVersion":"v1","kind":"Node","metadata":{"name":"kwok-1",
#     "annotations":{"kwok.x-k8s.io/node":"fake"}}}'
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-cluster.sh
source "$HERE/lib-cluster.sh"

KWOK_BIN="$TOOLS_CACHE/tools/bin/kwok"
KWOK_DIR="$CLUSTER_DIR/kwok"
PID_FILE="$PIDS_DIR/kwok.pid"
LOG_FILE="$LOGS_DIR/kwok.log"
STAGES="$KWOK_DIR/stages.yaml"

kwok_log() { printf '[kwok] %s\n' "$*" >&2; }

# kwok_pid: the pid of our kwok (its command line names this cluster's directory), if alive.
kwok_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(<"$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--config=$STAGES" || return 1
  printf '%s\n' "$pid"
}

write_stages() {
  mkdir -p "$KWOK_DIR"
  cat >"$STAGES" <<'EOF'
# Node: becomes Ready at once, with room for any pod.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: sscsi-node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
      - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
        operator: NotIn
        values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: kwok fake node
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      allocatable: {cpu: "64", memory: 256Gi, pods: "256"}
      capacity: {cpu: "64", memory: 256Gi, pods: "256"}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: fake
      phase: Running
---
# Node: heartbeat, so the node lifecycle controller keeps it Ready (grace period 50 s).
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: sscsi-node-heartbeat
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
      - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
        operator: In
        values: ["True"]
  delay:
    durationMilliseconds: 10000
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: kwok fake node
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}
  immediateNextStage: true
---
# Pod bound to a fake node: Running, every container ready.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: sscsi-pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
      - key: .metadata.deletionTimestamp
        operator: DoesNotExist
      - key: .status.podIP
        operator: DoesNotExist
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
# Pod being deleted: gone at once (there is no kubelet to confirm the containers stopped).
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: sscsi-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
      - key: .metadata.deletionTimestamp
        operator: Exists
  next:
    finalizers:
      empty: true
    delete: true
EOF
}

up() {
  if pid="$(kwok_pid)"; then
    kwok_log "already running (pid $pid)"
    return 0
  fi
  [[ -x "$KWOK_BIN" ]] || {
    kwok_log "missing $KWOK_BIN: run 'make tools' (hack/build-tools.sh kwok)"
    exit 1
  }
  [[ -f "$KUBECONFIG_FILE" ]] || {
    kwok_log "no cluster in $CLUSTER_DIR: run hack/cluster-up.sh first"
    exit 1
  }
  mkdir -p "$LOGS_DIR" "$PIDS_DIR"
  write_stages
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  # HOME is pointed at kwok's directory so that no ~/.kwok of the user is read.
  HOME="$KWOK_DIR" setsid "$KWOK_BIN" \
    --kubeconfig="$KUBECONFIG_FILE" \
    --config="$STAGES" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    </dev/null >"$LOG_FILE" 2>&1 &
  printf '%s\n' "$!" >"$PID_FILE"
  sleep 1
  if ! kwok_pid >/dev/null; then
    kwok_log "kwok exited at once; last lines of $LOG_FILE:"
    tail -n 20 "$LOG_FILE" >&2
    exit 1
  fi
  kwok_log "started (pid $(<"$PID_FILE")), log: $LOG_FILE"
}

down() {
  local pid
  if ! pid="$(kwok_pid)"; then
    rm -f "$PID_FILE"
    kwok_log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_exit 10 "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    wait_exit 5 "$pid" || true
  fi
  rm -f "$PID_FILE"
  kwok_log "stopped (pid $pid)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
