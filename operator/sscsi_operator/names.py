"""Names shared by the operator's modules: the API it serves and the marks it leaves on children."""

from typing import Final

GROUP: Final = "operator.secrets-store.csi.x-k8s.io"
VERSION: Final = "v1"
PLURAL: Final = "clustercsidrivers"
KIND: Final = "ClusterCSIDriver"
API_VERSION: Final = f"{GROUP}/{VERSION}"
# The only ClusterCSIDriver the operator serves (the CRD rejects other names).
SINGLETON: Final = "secrets-store.csi.k8s.io"

DRIVER_NAME: Final = "secrets-store.csi.k8s.io"
OPERATOR_NAME: Final = "secrets-store-csi-operator"
FIELD_MANAGER: Final = OPERATOR_NAME

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
PART_OF: Final = "secrets-store-csi-driver"
MANAGED_SELECTOR: Final = f"{MANAGED_BY_LABEL}={OPERATOR_NAME}"

FINALIZER: Final = f"{GROUP}/driver-cleanup"
ANNOTATION_PREFIX: Final = GROUP
CONFIG_HASH_ANNOTATION: Final = f"{GROUP}/config-hash"
# On the ClusterCSIDriver, value "true": remove the driver even while application pods still use it.
FORCE_REMOVAL_ANNOTATION: Final = f"{GROUP}/force-removal"
