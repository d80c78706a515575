#!/usr/bin/env bash
# Validate the OLM bundle and the file-based catalog with the ecosystem's own tools.
#
#   hack/bundle-validate.sh [BUNDLE_DIR [CATALOG_DIR]]     (defaults: bundle/ and catalog/)
#
# 1. The committed bundle and catalog are what `make bundle` makes from config/ and assets/ now
#    (hack/bundle.py --check: the whole pipeline into a temporary directory, then a diff), unless a
#    BUNDLE_DIR is given.
# 2. operator-sdk bundle validate with the operatorframework suite (operatorhubv2, capabilities,
#    categories, alpha-deprecated-apis against the Kubernetes we test on, good-practices) reports
#    no error AND no warning: a warning line fails this script, although operator-sdk exits 0.
# 3. opm validate accepts the catalog.
#
# Tools: operator-sdk and opm from `hack/build-tools.sh olm` ($OPERATOR_SDK / $OPM override), kubectl
# (kustomize) from `hack/build-tools.sh kube`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"

OPERATOR_SDK="${OPERATOR_SDK:-$TOOLS_CACHE/tools/bin/operator-sdk}"
OPM="${OPM:-$TOOLS_CACHE/tools/bin/opm}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BUNDLE_DIR="${1:-$ROOT/bundle}"
CATALOG_DIR="${2:-$ROOT/catalog}"

say() { printf '[bundle-validate] %s\n' "$*" >&2; }

for tool in "$OPERATOR_SDK" "$OPM"; do
  [[ -x "$tool" ]] || { say "missing $tool: run 'hack/build-tools.sh olm'"; exit 1; }
done

if [[ $# -eq 0 ]]; then
  say "bundle and catalog up to date with the sources"
  OPERATOR_SDK="$OPERATOR_SDK" OPM="$OPM" "$PYTHON" "$ROOT/hack/bundle.py" --check
fi

# alpha-deprecated-apis checks against this Kubernetes minor (the one the e2e tests run).
k8s_minor="${KUBE_VERSION%.*}"
say "operator-sdk bundle validate $BUNDLE_DIR --select-optional suite=operatorframework (k8s $k8s_minor)"
set +e
output="$("$OPERATOR_SDK" bundle validate "$BUNDLE_DIR" \
  --select-optional suite=operatorframework \
  --optional-values="k8s-version=$k8s_minor" 2>&1)"
status=$?
set -e
printf '%s\n' "$output"
if [[ $status -ne 0 ]]; then
  say "FAILED: operator-sdk exited with $status"
  exit 1
fi
# logrus prints `level=warning` (no terminal) or `WARN[0000]` (terminal); errors likewise.
if grep -Eiq 'level=(warning|error|fatal)|^(WARN|ERRO|FATA)\[' <<<"$output"; then
  say "FAILED: operator-sdk reported warnings or errors (see above); the bundle must be clean"
  exit 1
fi

say "opm validate $CATALOG_DIR"
"$OPM" validate "$CATALOG_DIR"
say "OK: bundle and catalog are valid, with no warnings"
