"""Helpers of the real-node tier: the node's control plane through sscsi_kube, kubectl, polling, manifests.

`Kube` reads, applies and deletes through the project's Kubernetes layer (sscsi_kube), with kubectl's
names (`pod`, `csv`, `clustercsidriver`) and defaults (the `default` namespace); `Kube.run`, `exec` and
`logs` stay kubectl (the same build as the control plane): there kubectl itself is what is tested.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from sscsi_kube import ApiError, KubeClient, Resource, ResourceMap, discover
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


FIELD_MANAGER = "sscsi-node-tests"
DELETE_TIMEOUT = 180.0


class _Blocking:
    """An sscsi_kube client on an event loop of its own, for the tier's synchronous tests."""

    def __init__(self, kubeconfig: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = KubeClient.from_config(str(kubeconfig), f"{FIELD_MANAGER}/python", timeout=60.0)
        self._names: ResourceMap | None = None

    def run(self, call: Awaitable[T]) -> T:
        return self.loop.run_until_complete(call)

    def resource(self, name: str) -> Resource:
        """kubectl's name for a kind; discovery again on a miss (a CRD applied since)."""
        for fresh in (False, True):
            if self._names is None or fresh:
                self._names = self.run(discover(self.client))
            try:
                return self._names.resolve(name)
            except ApiError:
                if fresh:
                    raise
        raise AssertionError("unreachable")


def _selectors(extra: tuple[str, ...]) -> tuple[bool, str | None, str | None] | None:
    """(all namespaces, labels, fields) from kubectl get's flags; None for a flag not known here."""
    everywhere, labels, fields = False, None, None
    args = list(extra)
    while args:
        arg = args.pop(0)
        if arg in ("-A", "--all-namespaces"):
            everywhere = True
        elif arg in ("-l", "--selector") and args:
            labels = args.pop(0)
        elif arg.startswith(("--selector=", "-l=")):
            labels = arg.split("=", 1)[1]
        elif arg == "--field-selector" and args:
            fields = args.pop(0)
        elif arg.startswith("--field-selector="):
            fields = arg.split("=", 1)[1]
        else:
            return None
    return everywhere, labels, fields


@dataclass
class Kube:
    kubeconfig: Path
    _api: _Blocking | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def api(self) -> _Blocking:
        if self._api is None:
            self._api = _Blocking(self.kubeconfig)
        return self._api

    def _where(self, res: Resource, namespace: str | None) -> str | None:
        return (namespace or "default") if res.namespaced else None

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        cmd = [str(KUBE_BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise KubectlError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def get(self, kind: str, name: str = "", namespace: str | None = None, *extra: str) -> Any:
        """What `kubectl get <kind> [name] [-n ns] -o json [-A] [-l ..] [--field-selector ..]` prints."""
        flags = _selectors(extra)
        if flags is None:  # a kubectl flag this reader does not speak
            args = ["get", kind, *([name] if name else []), "-o", "json", *extra]
            return json.loads(self.run(*args, *(["-n", namespace] if namespace else [])))
        everywhere, labels, fields = flags
        try:
            res = self.api.resource(kind)
            where = None if everywhere and not name else self._where(res, namespace)
            if name:
                return self.api.run(self.api.client.get(res, name, where))
            listing = self.api.run(self.api.client.list_all(res, where, labels=labels, fields=fields))
        except ApiError as err:
            raise KubectlError(f"get {kind} {name} (namespace {namespace}): {err}") from err
        return {"apiVersion": "v1", "kind": "List", "items": listing.items}

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        try:
            res = self.api.resource(kind)
            return self.api.run(self.api.client.find(res, name, self._where(res, namespace))) is not None
        except ApiError as err:
            raise KubectlError(f"get {kind} {name} (namespace {namespace}): {err}") from err

    def apply(self, manifest: Any, namespace: str | None = None) -> None:
        """Server-side apply as `kubectl apply --server-side --force-conflicts` (objects in order)."""
        docs = (
            list(yaml.safe_load_all(manifest))
            if isinstance(manifest, str)
            else (manifest if isinstance(manifest, list) else [manifest])
        )
        for doc in (d for d in docs if d):
            group, _, version = str(doc["apiVersion"]).rpartition("/")
            kind = str(doc["kind"]).lower()
            try:
                found = self.api.resource(f"{kind}.{group}" if group else kind)
                res = Resource(group, version, found.plural, found.kind, found.namespaced)
                body = {**doc, "metadata": dict(doc["metadata"])}
                if res.namespaced:
                    body["metadata"]["namespace"] = (
                        body["metadata"].get("namespace") or namespace or "default"
                    )
                self.api.run(self.api.client.apply(res, body, field_manager=FIELD_MANAGER, force=True))
            except ApiError as err:
                raise KubectlError(f"apply {doc['kind']} {doc['metadata'].get('name')}: {err}") from err

    def delete(self, kind: str, name: str, namespace: str | None = None, wait: bool = True) -> None:
        """`kubectl delete --ignore-not-found [--wait]`: background propagation, then until it is gone."""
        try:
            res = self.api.resource(kind)
            where = self._where(res, namespace)
            self.api.run(self.api.client.delete(res, name, where, propagation="Background", missing_ok=True))
            deadline = time.monotonic() + DELETE_TIMEOUT
            while wait and self.api.run(self.api.client.find(res, name, where)) is not None:
                if time.monotonic() > deadline:
                    raise KubectlError(f"{kind} {name} still exists {DELETE_TIMEOUT:.0f}s after its deletion")
                time.sleep(0.5)
        except ApiError as err:
            raise KubectlError(f"delete {kind} {name} (namespace {namespace}): {err}") from err

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
