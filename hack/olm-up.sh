#!/usr/bin/env bash
# Install OLM v0 into the real-node cluster the way a cluster runs it: the CRDs from OLM's module
# (deploy/chart/crds), the olm-operator and catalog-operator Deployments in namespace `olm`, and
# package-server installed by OLM itself from its ClusterServiceVersion (an aggregated API behind a
# Service: `kubectl get packagemanifests`). Images come from the loopback registry under their public
# names (hack/live-images.sh). Idempotent; waits until packagemanifests are served.
#
# Prerequisites: hack/node-up.sh (node, registry, kube-proxy, CoreDNS) and
# `hack/build-tools.sh live opm` (OLM binaries, opm, grpc_health_probe).
# stdout: the kubeconfig path. Deviations from OLM's chart, each for this 2-core single node:
# package-server runs 1 replica (chart: 2); OLMConfig disables copied CSVs (one CSV per install
# instead of one per namespace); images are pulled IfNotPresent (pinned tags, local registry).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib-node.sh
source "$HERE/lib-node.sh"

OLM_NS=olm
OLM_IMAGE="quay.io/operator-framework/olm:$OLM_VERSION"
OPM_IMAGE="quay.io/operator-framework/opm:$OPM_VERSION"
CRDS_DIR="$TOOLS_CACHE/tools/olm-$OLM_VERSION/crds"
TIMEOUT="${SSCSI_OLM_TIMEOUT:-300}"
START=$SECONDS

olog() { printf '[olm] %ss: %s\n' "$((SECONDS - START))" "$*" >&2; }

operator_deployment() {  # name binary args...
  local name=$1 bin=$2
  shift 2
  local args="" a
  for a in "$@"; do args+=$'\n'"            - \"$a\""; done
  cat <<EOF
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $name
  namespace: $OLM_NS
  labels: {app: $name}
spec:
  strategy: {type: Recreate}
  replicas: 1
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      serviceAccountName: olm-operator-serviceaccount
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: $name
          image: $OLM_IMAGE
          imagePullPolicy: IfNotPresent
          command: ["/bin/$bin"]
          args:$args
          env:
            - name: OPERATOR_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - name: OPERATOR_NAME
              value: $name
          ports: [{name: metrics, containerPort: 8080}]
          livenessProbe: {httpGet: {path: /healthz, port: 8080}}
          readinessProbe: {httpGet: {path: /healthz, port: 8080}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          resources: {requests: {cpu: 10m, memory: 80Mi}}
          terminationMessagePolicy: FallbackToLogsOnError
          volumeMounts: [{name: tmpfs, mountPath: /tmp}]
      volumes: [{name: tmpfs, emptyDir: {}}]
EOF
}

manifests() {
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $OLM_NS
  labels: {pod-security.kubernetes.io/enforce: baseline, pod-security.kubernetes.io/warn: restricted}
---
apiVersion: v1
kind: Namespace
metadata:
  name: operators
  labels: {pod-security.kubernetes.io/enforce: baseline}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: olm-operator-serviceaccount, namespace: $OLM_NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:controller:operator-lifecycle-manager"}
rules:
  - apiGroups: ["*"]
    resources: ["*"]
    verbs: [watch, list, get, create, update, patch, delete, deletecollection, escalate, bind]
  - nonResourceURLs: ["*"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: olm-operator-binding-$OLM_NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:controller:operator-lifecycle-manager"}
subjects: [{kind: ServiceAccount, name: olm-operator-serviceaccount, namespace: $OLM_NS}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: aggregate-olm-edit
  labels: {rbac.authorization.k8s.io/aggregate-to-admin: "true", rbac.authorization.k8s.io/aggregate-to-edit: "true"}
rules:
  - apiGroups: [operators.coreos.com]
    resources: [subscriptions]
    verbs: [create, update, patch, delete]
  - apiGroups: [operators.coreos.com]
    resources: [clusterserviceversions, catalogsources, installplans, subscriptions]
    verbs: [delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: aggregate-olm-view
  labels:
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
  - apiGroups: [operators.coreos.com]
    resources: [clusterserviceversions, catalogsources, installplans, subscriptions, operatorgroups]
    verbs: [get, list, watch]
  - apiGroups: [packages.operators.coreos.com]
    resources: [packagemanifests, packagemanifests/icon]
    verbs: [get, list, watch]
EOF
  operator_deployment olm-operator olm --namespace=$OLM_NS --writeStatusName=
  operator_deployment catalog-operator catalog --namespace=$OLM_NS "--opmImage=$OPM_IMAGE" \
    "--util-image=$OLM_IMAGE" --set-workload-user-id=true
}

# Objects of OLM's own API: applied once the CRDs are established and the operators run.
olm_objects() {
  cat <<EOF
apiVersion: operators.coreos.com/v1
kind: OLMConfig
metadata: {name: cluster}
spec:
  features: {disableCopiedCSVs: true}
---
apiVersion: operators.coreos.com/v1
kind: OperatorGroup
metadata: {name: global-operators, namespace: operators}
---
apiVersion: operators.coreos.com/v1
kind: OperatorGroup
metadata: {name: olm-operators, namespace: $OLM_NS}
spec:
  targetNamespaces: [$OLM_NS]
---
apiVersion: operators.coreos.com/v1alpha1
kind: ClusterServiceVersion
metadata:
  name: packageserver
  namespace: $OLM_NS
  labels: {olm.version: "${OLM_VERSION#v}"}
spec:
  displayName: Package Server
  description: Serves the PackageManifests of the cluster's CatalogSources.
  minKubeVersion: 1.11.0
  version: ${OLM_VERSION#v}
  maturity: alpha
  provider: {name: operator-framework}
  installModes:
    - {type: OwnNamespace, supported: true}
    - {type: SingleNamespace, supported: true}
    - {type: MultiNamespace, supported: true}
    - {type: AllNamespaces, supported: true}
  apiservicedefinitions:
    owned:
      - group: packages.operators.coreos.com
        version: v1
        kind: PackageManifest
        name: packagemanifests
        displayName: PackageManifest
        description: A package available from a CatalogSource
        deploymentName: packageserver
        containerPort: 5443
  install:
    strategy: deployment
    spec:
      clusterPermissions:
        - serviceAccountName: olm-operator-serviceaccount
          rules:
            - {apiGroups: [authorization.k8s.io], resources: [subjectaccessreviews], verbs: [create, get]}
            - {apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}
            - {apiGroups: [operators.coreos.com], resources: [catalogsources], verbs: [get, list, watch]}
            - {apiGroups: [packages.operators.coreos.com], resources: [packagemanifests], verbs: [get, list]}
      deployments:
        - name: packageserver
          spec:
            replicas: 1
            strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 1}}
            selector: {matchLabels: {app: packageserver}}
            template:
              metadata: {labels: {app: packageserver}}
              spec:
                serviceAccountName: olm-operator-serviceaccount
                securityContext:
                  runAsNonRoot: true
                  seccompProfile: {type: RuntimeDefault}
                containers:
                  - name: packageserver
                    image: $OLM_IMAGE
                    imagePullPolicy: IfNotPresent
                    command: [/bin/package-server, -v=2, --secure-port, "5443", --global-namespace, $OLM_NS]
                    ports: [{containerPort: 5443, protocol: TCP}]
                    livenessProbe: {httpGet: {scheme: HTTPS, path: /healthz, port: 5443}}
                    readinessProbe: {httpGet: {scheme: HTTPS, path: /healthz, port: 5443}}
                    securityContext:
                      allowPrivilegeEscalation: false
                      readOnlyRootFilesystem: true
                      capabilities: {drop: [ALL]}
                    resources: {requests: {cpu: 10m, memory: 50Mi}}
                    terminationMessagePolicy: FallbackToLogsOnError
                    volumeMounts: [{name: tmpfs, mountPath: /tmp}]
                volumes: [{name: tmpfs, emptyDir: {}}]
EOF
}

wait_until() {  # what timeout command...
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      olog "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 2
  done
}

diagnose() {
  kctl -n "$OLM_NS" get deploy,pods,csv -o wide >&2 || true
  kctl get apiservice v1.packages.operators.coreos.com -o yaml 2>&1 | sed -n '/^status:/,$p' >&2 || true
  local p
  for p in olm-operator catalog-operator; do
    olog "last lines of $p:"
    kctl -n "$OLM_NS" logs "deploy/$p" --tail=15 >&2 || true
  done
}

main() {
  if [[ ! -d "$CRDS_DIR" ]]; then
    olog "missing $CRDS_DIR: run 'hack/build-tools.sh olm-runtime'"
    exit 1
  fi
  "$HERE/live-images.sh" olm opm
  olog "OLM $OLM_VERSION CRDs (server-side apply: the CSV CRD is too large for client-side apply)"
  kctl apply --server-side --force-conflicts -f "$CRDS_DIR" >/dev/null
  kctl wait --for=condition=Established --timeout=60s -f "$CRDS_DIR" >/dev/null
  manifests | kctl apply -f - >/dev/null
  olog "olm-operator and catalog-operator Deployments applied; waiting for them"
  if ! kctl -n "$OLM_NS" rollout status deploy/olm-operator --timeout="${TIMEOUT}s" >/dev/null ||
    ! kctl -n "$OLM_NS" rollout status deploy/catalog-operator --timeout="${TIMEOUT}s" >/dev/null; then
    diagnose
    exit 1
  fi
  olm_objects | kctl apply -f - >/dev/null
  olog "package-server CSV applied; waiting for OLM to install it"
  if ! wait_until "CSV packageserver Succeeded" "$TIMEOUT" \
    bash -c "[[ \$('$KUBE_BIN/kubectl' --kubeconfig='$KUBECONFIG_FILE' -n $OLM_NS get csv packageserver \
      -o jsonpath='{.status.phase}') == Succeeded ]]" ||
    ! wait_until "packagemanifests served" 120 kctl get packagemanifests; then
    diagnose
    exit 1
  fi
  olog "OLM ready: kubectl get packagemanifests works"
  printf '%s\n' "$KUBECONFIG_FILE"
}

main "$@"
