"""Names the driver and the operator use (the CLI reads their objects; it imports neither)."""

from typing import Final

DRIVER_NAME: Final = "secrets-store.csi.k8s.io"
# The operator's default install: namespace, node plugin DaemonSet (label app=<name>), Deployment.
DRIVER_NAMESPACE: Final = "secrets-store-csi-driver"
DAEMONSET: Final = "secrets-store-csi-driver-node"
OPERATOR_DEPLOYMENT: Final = "secrets-store-csi-operator"
DRIVER_CONTAINER: Final = "csi-driver"
METRICS_PORT: Final = 8095

MANAGED_LABEL: Final = "secrets-store.csi.k8s.io/managed"
NODE_LABEL: Final = "internal.secrets-store.csi.k8s.io/node-name"
# Where providers put <provider>.sock (the DaemonSet's --provider-volume and the additional path).
PROVIDER_DIRS: Final = ("/var/run/secrets-store-csi-providers", "/etc/kubernetes/secrets-store-csi-providers")
# The driver accepts these provider names only (it looks up <name>.sock).
PROVIDER_NAME_PATTERN: Final = r"[a-zA-Z0-9_-]{1,30}"

# Pod events the driver and kubelet post about these volumes.
FAILED_MOUNT: Final = "FailedMount"
ROTATION_FAILED: Final = "MountRotationFailed"
ROTATION_COMPLETE: Final = "MountRotationComplete"
SYNC_REFUSED: Final = "SecretSyncRefused"
SYNC_FAILED: Final = "FailedToCreateSecret"


def spcps_name(pod: str, namespace: str, spc: str) -> str:
    """The driver's (and upstream's) name of a volume's SecretProviderClassPodStatus."""
    return f"{pod}-{namespace}-{spc}"
