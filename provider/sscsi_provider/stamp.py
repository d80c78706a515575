"""Stamped contents: time-versioned files anyone holding the salt can check (extension, for chaos runs).

Two optional SecretProviderClass parameters (they reach Mount in its attributes):

``stampPeriodSeconds: "<n>"``
    A positive integer. When set, each Mount call picks ONE version, ``int(time.time() // n)``, and every
    object's file holds one line instead of its usual value (rotation flag and objectContent/objectSize
    are then ignored; paths, modes and aliases are kept)::

        <namespace>/<pod>/<objectName> v<version> <digest>\\n

    where ``digest`` is the first 32 hex digits of
    ``sha256(salt + "/" + namespace + "/" + pod + "/" + objectName + "/" + str(version))``; the object's
    version is ``v<version>``. namespace and pod are the Mount's ``csi.storage.k8s.io/pod.namespace`` and
    ``csi.storage.k8s.io/pod.name`` attributes.
``stampSalt: "<random>"``
    Mixed into the digest (default empty). A checker that knows it recomputes the digest from the line
    alone; the digests are what a run greps the logs for, so neither the salt nor a line is ever logged.

Without ``stampPeriodSeconds`` nothing changes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

ATTR_STAMP_PERIOD = "stampPeriodSeconds"
ATTR_STAMP_SALT = "stampSalt"
DIGEST_HEX_DIGITS = 32
MAX_STAMP_PERIOD = 366 * 24 * 3600


class StampError(ValueError):
    """A stamping parameter is malformed; the message names it (never its value's secret part)."""


def stamp_digest(salt: str, namespace: str, pod: str, object_name: str, version: int) -> str:
    """The 32 hex digits that make a stamped line checkable."""
    material = f"{salt}/{namespace}/{pod}/{object_name}/{version}"
    return hashlib.sha256(material.encode()).hexdigest()[:DIGEST_HEX_DIGITS]


def stamp_line(salt: str, namespace: str, pod: str, object_name: str, version: int) -> bytes:
    """A stamped file's whole contents."""
    digest = stamp_digest(salt, namespace, pod, object_name, version)
    return f"{namespace}/{pod}/{object_name} v{version} {digest}\n".encode()


def stamp_version(period_seconds: int, now: float) -> int:
    return int(now // period_seconds)


@dataclass(frozen=True)
class Stamp:
    """The stamping of one Mount call: one version for all its objects."""

    salt: str
    namespace: str
    pod: str
    version: int

    @property
    def version_label(self) -> str:
        return f"v{self.version}"

    def contents(self, object_name: str) -> bytes:
        return stamp_line(self.salt, self.namespace, self.pod, object_name, self.version)


def parse_period(raw: str) -> int:
    text = raw.strip()
    try:
        period = int(text)
    except ValueError:
        raise StampError(f"{ATTR_STAMP_PERIOD} must be a positive integer, got {raw!r}") from None
    if not 0 < period <= MAX_STAMP_PERIOD:
        raise StampError(f"{ATTR_STAMP_PERIOD} must be between 1 and {MAX_STAMP_PERIOD}, got {period}")
    return period


def stamp_for(
    attributes: dict[str, str], namespace: str, pod: str, *, clock: Callable[[], float] = time.time
) -> Stamp | None:
    """The Mount's stamp when its attributes ask for one, else None; raises StampError."""
    raw = attributes.get(ATTR_STAMP_PERIOD)
    if raw is None or not raw.strip():
        return None
    period = parse_period(raw)
    return Stamp(
        salt=attributes.get(ATTR_STAMP_SALT, ""),
        namespace=namespace,
        pod=pod,
        version=stamp_version(period, clock()),
    )
