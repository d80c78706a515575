"""What the driver knows about each volume it mounted (in memory; the node itself is the source of truth)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .models import PodRef


@dataclass(slots=True)
class VolumeState:
    target: str
    pod: PodRef
    spc_name: str
    provider: str
    spc_generation: int
    versions: dict[str, str] = field(default_factory=dict)
    refreshed_at: float = field(default_factory=time.monotonic)

    def due(self, interval: float, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) - self.refreshed_at >= interval


class VolumeRegistry:
    def __init__(self) -> None:
        self._volumes: dict[str, VolumeState] = {}

    def get(self, target: str) -> VolumeState | None:
        return self._volumes.get(target)

    def put(self, state: VolumeState) -> None:
        self._volumes[state.target] = state

    def pop(self, target: str) -> VolumeState | None:
        return self._volumes.pop(target, None)

    def all(self) -> list[VolumeState]:
        return list(self._volumes.values())

    def __len__(self) -> int:
        return len(self._volumes)
