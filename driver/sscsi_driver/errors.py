"""Errors the node plugin returns to kubelet.

Each carries the gRPC status code kubelet sees and the `error_type` label that
upstream records in `node_publish_error_total`, so dashboards keep working.
"""

from __future__ import annotations

import grpc

# error_type label values, as upstream reports them.
FAILED_TO_MOUNT = "FailedToMount"
FAILED_TO_ENSURE_MOUNT_POINT = "FailedToEnsureMountPoint"
SPC_NOT_FOUND = "SecretProviderClassNotFound"
GRPC_PROVIDER_ERROR = "GRPCProviderError"
FILE_WRITE_ERROR = "FileWriteError"
PROVIDER_LOOKUP_FAILED = ""  # upstream leaves the label empty when the provider client lookup fails
INVALID_REQUEST = "InvalidRequest"
FAILED_TO_ROTATE = "FailedToRotate"


class DriverError(Exception):
    """An RPC failure with the code kubelet sees and the metric label recorded."""

    def __init__(self, message: str, *, code: grpc.StatusCode, error_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.error_type = error_type


def invalid_argument(message: str) -> DriverError:
    return DriverError(message, code=grpc.StatusCode.INVALID_ARGUMENT, error_type=INVALID_REQUEST)


def failed(message: str, error_type: str) -> DriverError:
    """Upstream returns plain Go errors for most publish failures; gRPC reports them as Unknown."""
    return DriverError(message, code=grpc.StatusCode.UNKNOWN, error_type=error_type)


def internal(message: str, error_type: str) -> DriverError:
    return DriverError(message, code=grpc.StatusCode.INTERNAL, error_type=error_type)


def redacted(err: DriverError, values: list[str]) -> DriverError:
    """`err` with each of `values` (service-account tokens) replaced by `***`."""
    message = err.message
    for value in values:
        if len(value) >= 8:
            message = message.replace(value, "***")
    return DriverError(message, code=err.code, error_type=err.error_type)
