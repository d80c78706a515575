"""The node's containers as the host sees them, without the apiserver or containerd (both may be down).

containerd's runc shim keeps, per running task, its OCI bundle under
/run/containerd/io.containerd.runtime.v2.task/k8s.io/<container id>/: `config.json` carries the CRI
annotations (pod namespace and name, container name) and `init.pid` the container's first process.
So a fault finds "the driver's csi-driver container" from files alone, while kubelet, containerd or
the control plane are being restarted by another fault.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

TASKS = Path("/run/containerd/io.containerd.runtime.v2.task/k8s.io")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_NS = "io.kubernetes.cri.sandbox-namespace"
_POD = "io.kubernetes.cri.sandbox-name"
_NAME = "io.kubernetes.cri.container-name"
_TYPE = "io.kubernetes.cri.container-type"


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    pid: int
    namespace: str
    pod: str
    name: str


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def running_containers(namespace: str, pod_prefix: str, name: str, tasks: Path = TASKS) -> list[Container]:
    """Live containers `name` of the pods in `namespace` whose name starts with `pod_prefix`."""
    found: list[Container] = []
    for bundle in sorted(tasks.glob("*")) if tasks.is_dir() else []:
        try:
            annotations = json.loads((bundle / "config.json").read_text()).get("annotations") or {}
            pid = int((bundle / "init.pid").read_text().strip())
        except (OSError, ValueError):
            continue  # a task being created or deleted
        if (
            annotations.get(_TYPE) == "container"
            and annotations.get(_NS) == namespace
            and str(annotations.get(_POD, "")).startswith(pod_prefix)
            and annotations.get(_NAME) == name
            and alive(pid)
        ):
            found.append(Container(bundle.name, pid, namespace, str(annotations[_POD]), name))
    return found


def cgroup_dir(pid: int, controller: str) -> Path | None:
    """The cgroup directory of `pid` for a v1 `controller` (e.g. memory), or its v2 directory."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers and (CGROUP_ROOT / "cgroup.controllers").exists():
            return CGROUP_ROOT / path.lstrip("/")
    return None


def netns_get(pid: int, url: str, timeout: float = 5.0) -> str:
    """GET `url` from inside the network namespace of `pid` (a pod's loopback); the body."""
    r = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "curl", "-sS", "--fail", "--max-time", str(timeout), url],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
        check=False,
    )
    if r.returncode != 0:
        raise OSError(f"GET {url} in the netns of pid {pid}: {r.stderr.strip() or r.returncode}")
    return r.stdout
