#!/usr/bin/env python3
"""`make demo-emulator`: a secret mounted into a pod's volume and rotated, end to end on this machine.

Starts the local control plane, installs the CRDs, runs the reference provider and the
driver (rotation on, 5 s interval), creates a SecretProviderClass and a Pod, and drives
the driver as kubelet does. Prints what the pod would see before and after rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

# The kubelet emulator's helpers (tests/ is on PYTHONPATH: `make demo-emulator`).
from harness.env import csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from sscsi_kube import ApiError
from sscsi_kube.resources import POD, SPC, SPCPS

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = Path(os.environ.get("SSCSI_CLUSTER_DIR", "/tmp/sscsi-cluster"))
KUBECONFIG = CLUSTER_DIR / "admin.kubeconfig"
NAMESPACE = "demo"


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


def show(title: str, target: Path) -> None:
    print(f"\n== {title}: {target}")
    for entry in sorted(target.iterdir()):
        if not entry.name.startswith(".."):
            print(f"  {entry.name:8} = {entry.read_text().strip()!r}")


def prepare_cluster() -> None:
    crds = str(ROOT / "assets" / "crds")
    kubectl = ("kubectl", f"--kubeconfig={KUBECONFIG}")
    sh(str(ROOT / "hack" / "cluster-up.sh"))
    sh(*kubectl, "apply", "--server-side", "-f", crds)
    sh(*kubectl, "wait", "--for=condition=Established", "-f", crds)
    subprocess.run([*kubectl, "create", "namespace", NAMESPACE], capture_output=True)


async def main() -> None:
    prepare_cluster()
    logs = CLUSTER_DIR / "logs" / "demo"
    async with driver_env(KUBECONFIG, logs, rotation=True, rotation_interval="5s") as env:
        objects = objects_param({"objectName": "foo", "objectVersion": "v1"}, {"objectName": "fookey"})
        for res, name in ((POD, "demo-app"), (SPC, "demo-spc")):
            with contextlib.suppress(ApiError):
                await env.api.request("DELETE", res.path(NAMESPACE, name), params={"gracePeriodSeconds": 0})
        await asyncio.sleep(1)
        await env.api.create(SPC, spc_manifest("demo-spc", NAMESPACE, objects), NAMESPACE)
        manifest = pod_manifest("demo-app", NAMESPACE, env.node, [csi_volume("secrets", "demo-spc")])
        for _ in range(100):
            try:
                pod = await env.api.create(POD, manifest, NAMESPACE)
                break
            except ApiError:
                await asyncio.sleep(0.2)
        [result] = await env.kubelet.publish_pod(pod)
        if not result.ok:
            raise SystemExit(f"publish failed: {result.error}")
        show("mounted (provider returns v1)", result.target)
        status = await env.api.get(SPCPS, f"demo-app-{NAMESPACE}-demo-spc", NAMESPACE)
        print("  SecretProviderClassPodStatus objects:", status["status"]["objects"])

        print("\n.. the external store changes (provider toggled to rotated), kubelet republishes after 5 s")
        env.provider_control("/rotation?rotated=true")
        await asyncio.sleep(5.5)
        await env.kubelet.republish_pod(pod)
        show("after rotation", result.target)
        status = await env.api.get(SPCPS, f"demo-app-{NAMESPACE}-demo-spc", NAMESPACE)
        print("  SecretProviderClassPodStatus objects:", status["status"]["objects"])
        env.provider_control("/rotation?rotated=false")

        await env.kubelet.unpublish_pod(pod)
        print(f"\nunpublished; tmpfs removed: {not result.target.exists()}")
        print(f"logs: {CLUSTER_DIR / 'logs'}; the control plane keeps running (make cluster-down stops it)")


if __name__ == "__main__":
    asyncio.run(main())
