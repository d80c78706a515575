"""The reference provider's stamp lines, recomputed and checked without asking the provider (pure).

With `stampPeriodSeconds: n` and `stampSalt: s` on a SecretProviderClass, every object the provider
serves for one Mount is the single line

    <namespace>/<pod>/<objectName> v<version> <sha256_hex(s/namespace/pod/objectName/version)[:32]>

with `version = int(mount time // n)`. The digest is what the run calls "secret bytes": it must never
appear in a log, and a file or Secret holding a line whose digest does not recompute is corrupt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DIGEST_CHARS = 32
_LINE = re.compile(r"([a-z0-9.-]+)/([a-z0-9.-]+)/([A-Za-z0-9._-]+) v(\d+) ([0-9a-f]{32})\n")
# A digest in a log: 32 lowercase hex digits not inside a longer hex run (container ids are 64).
DIGEST_TOKEN = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")


@dataclass(frozen=True, slots=True)
class Stamp:
    namespace: str
    pod: str
    object_name: str
    version: int
    digest: str


def digest(salt: str, namespace: str, pod: str, object_name: str, version: int) -> str:
    material = f"{salt}/{namespace}/{pod}/{object_name}/{version}"
    return hashlib.sha256(material.encode()).hexdigest()[:DIGEST_CHARS]


def line(salt: str, namespace: str, pod: str, object_name: str, version: int) -> str:
    """The line the provider serves (what a test expects to read)."""
    stamp = digest(salt, namespace, pod, object_name, version)
    return f"{namespace}/{pod}/{object_name} v{version} {stamp}\n"


def version_at(seconds: float, period: float) -> int:
    """The version a Mount at wall-clock `seconds` serves."""
    return int(seconds // period)


def parse(text: str) -> Stamp | None:
    """The stamp in `text` when it is exactly one well-formed line; None for anything else
    (empty, partial, two lines, another format)."""
    found = _LINE.fullmatch(text)
    if found is None:
        return None
    ns, pod, obj, version, stamp = found.groups()
    return Stamp(ns, pod, obj, int(version), stamp)


def genuine(stamp: Stamp, salt: str) -> bool:
    """The digest recomputes from the salt and the line's own fields."""
    return stamp.digest == digest(salt, stamp.namespace, stamp.pod, stamp.object_name, stamp.version)


def possible_digests(
    salt: str, namespace: str, pod: str, objects: Iterable[str], first: int, last: int
) -> Iterator[tuple[str, str]]:
    """(digest, what) for every version first..last of the pod's objects: what a log must not hold."""
    for obj in objects:
        for version in range(first, last + 1):
            yield digest(salt, namespace, pod, obj, version), f"{namespace}/{pod}/{obj} v{version}"
