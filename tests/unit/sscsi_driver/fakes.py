"""The publish path's fakes: a scripted provider servicer, in-memory Kubernetes, kubelet's layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sscsi_driver import mounter
from sscsi_driver.config import parse_config
from sscsi_driver.metrics import Metrics
from sscsi_driver.models import PodRef
from sscsi_driver.provider_client import ProviderClients
from sscsi_driver.publisher import Publisher, PublishRequest
from sscsi_proto import provider_pb2, provider_pb2_grpc


class ScriptedProvider(provider_pb2_grpc.CSIDriverProviderServicer):
    def __init__(self) -> None:
        self.response = provider_pb2.MountResponse()
        self.calls = 0

    def Mount(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return self.response


@dataclass
class FakeSpcs:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        from sscsi_kube import ApiError

        try:
            return self.objects[(namespace, name)]
        except KeyError:
            raise ApiError(404, "NotFound", f'secretproviderclasses "{name}" not found') from None

    def acquire(self, namespace: str) -> None:
        pass

    def release(self, namespace: str) -> None:
        pass


@dataclass
class FakeStatuses:
    written: list[dict[str, str]] = field(default_factory=list)

    def current_versions(self, pod: PodRef, spc_name: str) -> dict[str, str]:
        return {}

    async def upsert(self, pod: PodRef, spc_name: str, target: str, versions: Any) -> bool:
        self.written.append(dict(versions))
        return True


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def pod_event(self, pod: PodRef, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


def make_publisher(
    root: Path, sock_dir: Path, *, rotation: bool = False, interval: str = "0s"
) -> tuple[Publisher, FakeEvents]:
    cfg, _ = parse_config(
        [
            f"--kubelet-root-dir={root}",
            f"--enable-secret-rotation={rotation}",
            f"--rotation-poll-interval={interval}",
        ]
    )
    spcs = FakeSpcs(
        {
            ("ns", "spc"): {
                "metadata": {"namespace": "ns", "name": "spc", "generation": 1},
                "spec": {"provider": "scripted", "parameters": {"objects": "x"}},
            }
        }
    )
    events = FakeEvents()
    publisher = Publisher(
        cfg,
        providers=ProviderClients([sock_dir], 4 * 1024 * 1024, 10.0),
        spcs=spcs,  # type: ignore[arg-type]
        statuses=FakeStatuses(),  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        metrics=Metrics(CollectorRegistry()),
    )
    return publisher, events


def request(target: Path) -> PublishRequest:
    return PublishRequest(
        target_path=str(target),
        readonly=True,
        volume_context={
            "secretProviderClass": "spc",
            "csi.storage.k8s.io/pod.name": "p",
            "csi.storage.k8s.io/pod.namespace": "ns",
            "csi.storage.k8s.io/pod.uid": "uid-1",
        },
        secrets={},
    )


def kubelet_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A kubelet root and a volume target under it, laid out as kubelet does (the volume dir exists)."""
    root = tmp_path / "kubelet"
    target = root / "pods" / "uid-1" / "volumes" / "kubernetes.io~csi" / "v" / "mount"
    target.parent.mkdir(parents=True, exist_ok=True)
    return root, target


def unmount_all(root: Path) -> None:
    for mount in reversed(mounter.mounts_under(root)):
        mounter.unmount(mount)
