"""Secrets Store CSI node plugin: mounts secrets from provider plugins into pods."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("secrets-store-csi-py-driver")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "local-dev"
