"""What one `make bench` run is configured with (`Settings`) and what all its phases share (`Shared`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sscsi_kube import KubeClient

from .audit import AuditLog


@dataclass(frozen=True)
class Settings:
    mode: str
    publish_sizes: tuple[int, ...] = (1, 10, 110)
    objects_per_volume: int = 10
    object_size: int = 1024
    namespaces_per_driver: int = 10
    rotation_interval_s: float = 10.0
    idle_window_s: float = 10.0
    settle_s: float = 2.0
    large: bool = True
    large_repeats: int = 3
    large_secret_bytes: int = 3 * 1024 * 1024
    many_files: int = 100
    scale_factor: int = 10
    scale_nodes: int = 10
    scale_namespaces: int = 20

    @property
    def steady_pods(self) -> int:
        return max(self.publish_sizes)

    @classmethod
    def full(cls) -> Settings:
        return cls(mode="full")

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            mode="smoke",
            publish_sizes=(2,),
            namespaces_per_driver=1,
            rotation_interval_s=4.0,  # the throttled pass runs ~2 s after the burst: room under load
            idle_window_s=1.0,
            settle_s=1.0,
            large=False,
            scale_factor=0,
        )


@dataclass
class Shared:
    """What every phase uses: the apiserver, its audit log, paths and the run's identity.

    `run_id` makes the names of a round's objects (each round has its own); `run_label` is the whole
    run's id, the value of the label on every namespace and node it creates: what its cleanup deletes,
    so two runs on one cluster never delete each other's objects."""

    api: KubeClient
    audit: AuditLog
    kubeconfig: Path
    run_id: str
    workroot: Path
    logs_dir: Path
    settings: Settings
    progress: Callable[[str], object] = print
    py_spy_dir: Path | None = None  # record our driver with py-spy (slows it: profiling runs only)
    run_label: str = ""

    def __post_init__(self) -> None:
        if not self.run_label:
            self.run_label = self.run_id
