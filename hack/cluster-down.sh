#!/usr/bin/env bash
# Stop the local control plane started by hack/cluster-up.sh.
#
# Sends SIGTERM to the kube components, then to etcd, and SIGKILL to whatever is left after
# SSCSI_STOP_TIMEOUT seconds (default 20). Processes are found through a scan of /proc (our
# build under $TOOLS_CACHE, command line naming $SSCSI_CLUSTER_DIR), so a lost pid file does
# not leave a process behind. Keeps pki/, logs/ and the kubeconfig.
#
#   --purge   also delete the etcd data (the next cluster-up starts with an empty cluster)
#
# Exits 0 when nothing was running; non-zero only if a process survives SIGKILL.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-cluster.sh
source "$HERE/lib-cluster.sh"

purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    -h | --help)
      sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      log "unknown argument: $arg (usage: $0 [--purge])"
      exit 2
      ;;
  esac
done

if [[ ! -d "$CLUSTER_DIR" ]]; then
  log "nothing was running ($CLUSTER_DIR does not exist)"
  exit 0
fi
take_lock
stop_all "${SSCSI_STOP_TIMEOUT:-20}"
if ((purge)); then
  log "removing etcd data $ETCD_DATA_DIR"
  rm -rf "$ETCD_DATA_DIR"
fi
if ((STOPPED)); then
  log "stopped $STOPPED processes; logs kept in $LOGS_DIR"
fi
