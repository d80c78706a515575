#!/usr/bin/env bash
# Print the path of promtool (Prometheus' rule checker), installing Debian's `prometheus` package
# (which ships it) when missing. Used by tests/unit/bundle/test_alerts.py; its service is kept
# from starting (lib-packages.sh's policy-rc.d).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-packages.sh
source "$HERE/lib-packages.sh"
command -v promtool >/dev/null 2>&1 || ensure_debian_packages prometheus
command -v promtool
