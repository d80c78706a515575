"""A driver + reference provider + kubelet emulator wired to the local control plane."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sscsi_kube import KubeClient, Resource

from .kubelet import KubeletEmulator
from .processes import Process, free_port, start_driver, start_provider

NODE = Resource("", "v1", "nodes", "Node", namespaced=False)


@dataclass
class DriverEnv:
    workdir: Path
    node: str
    driver: Process
    provider: Process
    kubelet: KubeletEmulator
    api: KubeClient
    provider_http: str
    metrics_url: str
    kubelet_root: Path
    provider_dir: Path
    restart: Callable[[], Process] | None = None

    def kill_driver(self) -> None:
        self.driver.kill()

    async def restart_driver(self) -> None:
        assert self.restart is not None
        self.driver.kill()
        self.driver = await asyncio.to_thread(self.restart)

    def provider_control(self, path: str) -> str:
        with urllib.request.urlopen(self.provider_http + path, timeout=10) as resp:
            body: bytes = resp.read()
            return body.decode()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            body: bytes = resp.read()
            return body.decode()


async def ensure_node(api: KubeClient, name: str) -> None:
    """Pods bound to a node that does not exist are deleted by the pod GC, so register one."""
    with contextlib.suppress(Exception):
        await api.create(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


@contextlib.asynccontextmanager
async def driver_env(
    kubeconfig: Path,
    log_dir: Path,
    *,
    node: str = "sscsi-node-1",
    rotation: bool = False,
    rotation_interval: str = "2m",
    extra_args: tuple[str, ...] = (),
) -> AsyncIterator[DriverEnv]:
    workdir = Path(tempfile.mkdtemp(prefix="sscsi-env-"))
    kubelet_root = workdir / "kubelet"
    provider_dir = workdir / "providers"
    (kubelet_root / "pods").mkdir(parents=True)
    provider_dir.mkdir()
    api = KubeClient.from_config(str(kubeconfig), "sscsi-tests/kubelet-emulator")
    await ensure_node(api, node)
    http_port, metrics_port = free_port(), free_port()
    provider = await asyncio.to_thread(start_provider, provider_dir, log_dir, http_port=http_port)

    def launch() -> Process:
        return start_driver(
            socket_path=workdir / "csi.sock",
            kubeconfig=kubeconfig,
            node=node,
            provider_dir=provider_dir,
            kubelet_root=kubelet_root,
            log_dir=log_dir,
            metrics_port=metrics_port,
            rotation=rotation,
            rotation_interval=rotation_interval,
            extra=extra_args,
        )

    driver = await asyncio.to_thread(launch)
    kubelet = KubeletEmulator(str(workdir / "csi.sock"), kubelet_root, node, api)
    env = DriverEnv(
        workdir=workdir,
        node=node,
        driver=driver,
        provider=provider,
        kubelet=kubelet,
        api=api,
        provider_http=f"http://127.0.0.1:{http_port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        kubelet_root=kubelet_root,
        provider_dir=provider_dir,
        restart=launch,
    )
    try:
        yield env
    finally:
        await kubelet.close()
        env.driver.stop()
        provider.stop()
        await api.close()
        _unmount_all(kubelet_root)
        shutil.rmtree(workdir, ignore_errors=True)


def _unmount_all(root: Path) -> None:
    from sscsi_driver import mounter

    for mount in reversed(mounter.mounts_under(root)):
        with contextlib.suppress(OSError):
            mounter.unmount(mount)


def pod_manifest(
    name: str, namespace: str, node: str, volumes: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "app",
                    "image": "local/busybox:1.35",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "volumeMounts": [
                        {"name": v["name"], "mountPath": f"/mnt/{v['name']}", "readOnly": True}
                        for v in volumes
                    ],
                }
            ],
            "volumes": volumes,
            **spec,
        },
    }


def csi_volume(
    name: str, spc: str, *, read_only: bool = True, secret_ref: str | None = None
) -> dict[str, Any]:
    csi: dict[str, Any] = {
        "driver": "secrets-store.csi.k8s.io",
        "readOnly": read_only,
        "volumeAttributes": {"secretProviderClass": spc},
    }
    if secret_ref:
        csi["nodePublishSecretRef"] = {"name": secret_ref}
    return {"name": name, "csi": csi}


def objects_param(*objects: dict[str, Any]) -> str:
    """The `objects` SPC parameter in the e2e provider's YAML-array format."""
    import yaml

    items = [yaml.safe_dump(o, sort_keys=False) for o in objects]
    return yaml.safe_dump({"array": items}, sort_keys=False)


def spc_manifest(
    name: str, namespace: str, objects: str, *, provider: str = "e2e-provider", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"provider": provider, "parameters": {"objects": objects}, **spec},
    }
