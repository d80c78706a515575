"""The seam between the checks and the cluster: what the CLI reads, and how a refusal looks.

The checks never talk to the apiserver; they get objects (or a `Denied`) gathered through
`Cluster`, so their verdicts are pure functions of recorded objects. `kube_cluster` implements it
with the shared Kubernetes layer and the user's own kubeconfig and RBAC.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """As RBAC and kubectl name it: `pods`, `csinodes.storage.k8s.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


POD = Kind("", "v1", "pods")
NODE = Kind("", "v1", "nodes", namespaced=False)
EVENT = Kind("", "v1", "events")
SECRET = Kind("", "v1", "secrets")
DAEMON_SET = Kind("apps", "v1", "daemonsets")
DEPLOYMENT = Kind("apps", "v1", "deployments")
CSI_DRIVER = Kind("storage.k8s.io", "v1", "csidrivers", namespaced=False)
CSI_NODE = Kind("storage.k8s.io", "v1", "csinodes", namespaced=False)
SPC = Kind("secrets-store.csi.x-k8s.io", "v1", "secretproviderclasses")
SPCPS = Kind("secrets-store.csi.x-k8s.io", "v1", "secretproviderclasspodstatuses")
CLUSTER_CSI_DRIVER = Kind("operator.secrets-store.csi.x-k8s.io", "v1", "clustercsidrivers", namespaced=False)


def describe(verb: str, kind: Kind, namespace: str | None = None, name: str | None = None) -> str:
    """`get csinodes.storage.k8s.io sscsi-node`, `list pods in namespace app`."""
    text = f"{verb} {kind.resource}" + (f" {name}" if name else "")
    if kind.namespaced:
        text += f" in namespace {namespace}" if namespace else " in all namespaces"
    return text


class Forbidden(Exception):
    """The apiserver refused the request (403): the user's RBAC does not allow it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class NotFound(Exception):
    """404: the object does not exist, or its API is not served."""


class Unreachable(Exception):
    """Anything else: the apiserver could not be asked (connection, 5xx, bad kubeconfig)."""


@dataclass(frozen=True)
class Denied:
    """A read RBAC forbids: the verdict of every link that needed it is `unknown`."""

    what: str

    def __str__(self) -> str:
        return f"RBAC forbids {self.what}"


class Cluster(Protocol):
    """Read-only access as the user: `get`/`list` JSON objects and GET through a pod's proxy."""

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj: ...

    async def list(
        self, kind: Kind, namespace: str | None = None, *, labels: str = "", fields: str = ""
    ) -> list[Obj]: ...

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str: ...


async def fetch(call: Awaitable[Obj]) -> Obj | Denied | None:
    """One object, None when absent, Denied when RBAC refuses."""
    try:
        return await call
    except NotFound:
        return None
    except Forbidden as err:
        return Denied(err.what)


async def fetch_list(call: Awaitable[list[Obj]]) -> list[Obj] | Denied:
    """Objects (none when the API is not served), Denied when RBAC refuses."""
    try:
        return await call
    except NotFound:
        return []
    except Forbidden as err:
        return Denied(err.what)


async def fetch_text(call: Awaitable[str]) -> str | Denied | None:
    """A proxied body; None when the pod could not answer (not running, port closed)."""
    try:
        return await call
    except Forbidden as err:
        return Denied(err.what)
    except (NotFound, Unreachable):
        return None
