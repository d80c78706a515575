"""Invariants 1 and 2 on what was read, and the grace-period bookkeeping of invariant 3 (pure).

`judge_volume` takes one volume's files (one generation) and says what is wrong with them: a file
missing, empty, partial or not a stamp line, another pod's or another object's line, a digest that does
not recompute, two versions in one volume, a version older than allowed. `judge_secret` does the same
for a synced Secret's data. `Lingering` remembers since when something that should be gone is there.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from . import stamps
from .load import SpcSpec


@dataclass
class VolumeVerdict:
    version: int | None = None
    age: float = 0.0  # seconds since the oldest version's period began
    problems: list[str] = field(default_factory=list)
    lost_bytes: int = 0
    digests: list[str] = field(default_factory=list)


def judge_volume(
    files: Mapping[str, bytes],
    spec: SpcSpec,
    namespace: str,
    pod: str,
    now: float,
    period: float,
    allowed_age: float,
) -> VolumeVerdict:
    """`now` is the wall clock when the files were read; allowed_age the staleness bound then."""
    verdict = VolumeVerdict()
    current = stamps.version_at(now, period)
    versions: set[int] = set()
    for obj in spec.objects:
        expected_size = len(stamps.line(spec.salt, namespace, pod, obj, current).encode())
        raw = files.get(obj)
        if raw is None:
            verdict.problems.append(f"{obj}: missing")
            verdict.lost_bytes += expected_size
            continue
        try:
            stamp = stamps.parse(raw.decode())
        except UnicodeDecodeError:
            stamp = None
        if stamp is None:
            verdict.problems.append(f"{obj}: not one stamp line ({len(raw)} bytes)")
            verdict.lost_bytes += expected_size
            continue
        verdict.digests.append(stamp.digest)
        if (stamp.namespace, stamp.pod, stamp.object_name) != (namespace, pod, obj):
            verdict.problems.append(
                f"{obj}: holds {stamp.namespace}/{stamp.pod}/{stamp.object_name} v{stamp.version}"
            )
            verdict.lost_bytes += expected_size
            continue
        if not stamps.genuine(stamp, spec.salt):
            verdict.problems.append(f"{obj}: digest of v{stamp.version} does not recompute")
            verdict.lost_bytes += expected_size
            continue
        versions.add(stamp.version)
    extra = sorted(set(files) - set(spec.objects))
    if extra:
        verdict.problems.append(f"files not in the SPC: {extra}")
    if len(versions) > 1:
        verdict.problems.append(f"mix of versions in one volume: {sorted(versions)}")
    if versions:
        oldest = min(versions)
        verdict.version = max(versions)
        age = verdict.age = now - oldest * period
        if age > allowed_age:
            verdict.problems.append(f"stale: v{oldest} is {age:.1f}s old, allowed {allowed_age:.1f}s")
        if max(versions) > current + 1:
            verdict.problems.append(f"version v{max(versions)} from the future (now v{current})")
    return verdict


def judge_secret(
    data: Mapping[str, str], spec: SpcSpec, namespace: str, mounted_by: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(problems, digests) of a synced Secret's data (base64 values, as the API has them): each key
    one genuine stamp line of that object, for a pod of this namespace that mounted the SPC."""
    problems: list[str] = []
    digests: list[str] = []
    pods = set(mounted_by)
    if set(data) != set(spec.objects):
        problems.append(f"keys {sorted(data)} are not {sorted(spec.objects)}")
    for key, value in sorted(data.items()):
        try:
            stamp = stamps.parse(base64.b64decode(value, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            stamp = None
        if stamp is None:
            problems.append(f"{key}: not one stamp line")
            continue
        digests.append(stamp.digest)
        if stamp.namespace != namespace or stamp.object_name != key:
            problems.append(f"{key}: holds {stamp.namespace}/{stamp.pod}/{stamp.object_name}")
        elif stamp.pod not in pods:
            problems.append(f"{key}: holds the stamp of {stamp.pod}, which never mounted {spec.name}")
        elif not stamps.genuine(stamp, spec.salt):
            problems.append(f"{key}: digest of v{stamp.version} does not recompute")
    return problems, digests


@dataclass
class Lingering:
    """Things that should be gone: since when each has been seen, and which are past their grace."""

    since: dict[str, float] = field(default_factory=dict)

    def observe(
        self, present: Iterable[str], now: float, grace: Callable[[float], float]
    ) -> list[tuple[str, float]]:
        """Record what is there now; (key, seconds seen) for those seen for longer than their grace,
        `grace(since)` for something first seen at `since`."""
        keys = set(present)
        for gone in set(self.since) - keys:
            del self.since[gone]
        for key in keys:
            self.since.setdefault(key, now)
        return sorted((k, now - t) for k, t in self.since.items() if now - t > grace(t))
