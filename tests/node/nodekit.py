"""Helpers of the real-node tier: kubectl against the node's control plane, polling, manifests.

Everything goes through kubectl (the same build as the control plane) so a failing step can be
replayed by hand with the command shown in the error.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from versions_env import kube_bin, versions

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"


VERSIONS = versions()
KUBE_BIN = kube_bin()
CLUSTER_DIR = Path(os.environ.get("SSCSI_NODE_CLUSTER_DIR", "/tmp/sscsi-node-cluster"))
NODE_NAME = os.environ.get("SSCSI_NODE_NAME", "sscsi-node")
DRIVER_NAME = "secrets-store.csi.k8s.io"
MOCK_KEY = "This is mock key"
# hack/images.sh's busybox (Debian's busybox-static), imported under the public name.
BUSYBOX_IMAGE = "docker.io/library/busybox:1.35"

T = TypeVar("T")


class KubectlError(AssertionError):
    pass


@dataclass
class Kube:
    kubeconfig: Path

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        cmd = [str(KUBE_BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise KubectlError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def get(self, kind: str, name: str = "", namespace: str | None = None, *extra: str) -> Any:
        args = ["get", kind, *([name] if name else []), "-o", "json", *extra]
        if namespace:
            args += ["-n", namespace]
        return json.loads(self.run(*args))

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
        if namespace:
            args += ["-n", namespace]
        return bool(self.run(*args).strip())

    def apply(self, manifest: Any, namespace: str | None = None) -> None:
        text = (
            manifest
            if isinstance(manifest, str)
            else yaml.safe_dump_all(manifest if isinstance(manifest, list) else [manifest])
        )
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=sscsi-node-tests", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        self.run(*args, input=text)

    def delete(self, kind: str, name: str, namespace: str | None = None, wait: bool = True) -> None:
        args = ["delete", kind, name, "--ignore-not-found", f"--wait={'true' if wait else 'false'}"]
        if namespace:
            args += ["-n", namespace]
        self.run(*args, timeout=180)

    def exec(self, pod: str, namespace: str, *command: str, container: str | None = None) -> str:
        args = ["exec", pod, "-n", namespace]
        if container:
            args += ["-c", container]
        return self.run(*args, "--", *command)

    def logs(self, pod: str, namespace: str, container: str | None = None) -> str:
        args = ["logs", pod, "-n", namespace]
        if container:
            args += ["-c", container]
        return self.run(*args, check=False, timeout=30)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.get("pods", "", namespace, "-l", selector)["items"]

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return self.get("events", "", namespace)["items"]

    def secret_data(self, name: str, namespace: str) -> dict[str, str]:
        data = self.get("secret", name, namespace).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 120, interval: float = 1.0) -> T:
    """Poll fn until it returns something truthy; its last exception or value goes in the error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except (KubectlError, OSError, KeyError, ValueError, subprocess.TimeoutExpired) as err:
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")
        time.sleep(interval)


def pod_ready(kube: Kube, name: str, namespace: str) -> bool:
    pod = kube.get("pod", name, namespace)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def wait_pod_ready(kube: Kube, name: str, namespace: str, timeout: float = 120) -> None:
    def ready() -> bool:
        if pod_ready(kube, name, namespace):
            return True
        # Surface the reason (FailedMount...) while waiting.
        raise KubectlError(describe_failure(kube, name, namespace))

    wait_for(f"pod {namespace}/{name} Ready", ready, timeout=timeout)


def describe_failure(kube: Kube, name: str, namespace: str) -> str:
    lines = []
    for ev in kube.events(namespace):
        if ev["involvedObject"].get("name") == name and ev.get("type") == "Warning":
            lines.append(f"{ev['reason']}: {ev['message']}")
    return "; ".join(lines[-3:]) or "no warning events"


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def load_manifest(name: str, **changes: Any) -> dict[str, Any]:
    """A manifest of tests/e2e/manifests (shared with the emulated-kubelet tier)."""
    doc = yaml.safe_load((REPO / "tests" / "e2e" / "manifests" / name).read_text())
    doc["metadata"].update(changes)
    return doc


def objects_param(*names: str) -> str:
    return "array:\n" + "".join(f"  - |\n    objectName: {n}\n    objectVersion: v1\n" for n in names)


def spc(
    name: str,
    *,
    objects: tuple[str, ...] = ("foo", "fookey"),
    secret_objects: list[dict] | None = None,
    api_version: str = "v1",
    provider: str = "e2e-provider",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"provider": provider, "parameters": {"objects": objects_param(*objects)}}
    if secret_objects:
        spec["secretObjects"] = secret_objects
    return {
        "apiVersion": f"secrets-store.csi.x-k8s.io/{api_version}",
        "kind": "SecretProviderClass",
        "metadata": {"name": name},
        "spec": spec,
    }


def csi_volume(name: str, spc_name: str) -> dict[str, Any]:
    return {
        "name": name,
        "csi": {
            "driver": DRIVER_NAME,
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": spc_name},
        },
    }


def app_pod_spec(volumes: list[tuple[str, str, str]], env: list[dict] | None = None) -> dict[str, Any]:
    """A busybox pod spec; volumes: (volume name, SPC name, mount path)."""
    container: dict[str, Any] = {
        "name": "busybox",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sleep", "10000"],
        "volumeMounts": [{"name": v, "mountPath": path, "readOnly": True} for v, _, path in volumes],
    }
    if env:
        container["env"] = env
    return {
        "terminationGracePeriodSeconds": 0,
        "dnsPolicy": "Default",
        "containers": [container],
        "volumes": [csi_volume(v, s) for v, s, _ in volumes],
    }


def secret_env(var: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def deployment(name: str, replicas: int, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def deployment_ready(kube: Kube, name: str, namespace: str, replicas: int) -> bool:
    st = kube.get("deployment", name, namespace).get("status", {})
    return st.get("readyReplicas", 0) == replicas and st.get("updatedReplicas", 0) == replicas


def host_mounts_under(path: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp == path or mp.startswith(path.rstrip("/") + "/"):
            out.append(mp)
    return out
