"""`Cluster` over the shared Kubernetes layer, as the user of the kubeconfig (their RBAC, not ours)."""

from __future__ import annotations

from sscsi_kube import ApiError, KubeClient, Resource
from sscsi_kube.config import default_namespace

from .access import Forbidden, Kind, NotFound, Obj, Unreachable, describe

USER_AGENT = "kubectl-secrets_store"


def _resource(kind: Kind) -> Resource:
    return Resource(kind.group, kind.version, kind.plural, kind.plural, kind.namespaced)


def _translate(err: ApiError, what: str) -> Exception:
    if err.status == 403:
        return Forbidden(what)
    if err.status == 404:
        return NotFound(what)
    if err.status == 401:
        return Unreachable(f"{what}: the apiserver does not accept these credentials (401 Unauthorized)")
    return Unreachable(f"{what}: {err}")


class KubeCluster:
    def __init__(self, client: KubeClient, namespace: str = "default") -> None:
        self._client = client
        # The namespace kubectl uses without -n (the kubeconfig context's).
        self.namespace = namespace

    @classmethod
    def connect(
        cls, kubeconfig: str | None, context: str | None = None, timeout: float = 15.0
    ) -> KubeCluster:
        try:
            client = KubeClient.from_config(kubeconfig, USER_AGENT, timeout, context)
            return cls(client, default_namespace(kubeconfig, context))
        except Exception as err:  # ConfigError, an unreadable file, bad YAML or certificates
            raise Unreachable(f"cannot load the Kubernetes configuration: {err}") from None

    async def close(self) -> None:
        await self._client.close()

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        try:
            return await self._client.get(_resource(kind), name, namespace)
        except ApiError as err:
            raise _translate(err, describe("get", kind, namespace, name)) from None

    async def list(
        self, kind: Kind, namespace: str | None = None, *, labels: str = "", fields: str = ""
    ) -> list[Obj]:
        try:
            listing = await self._client.list_all(
                _resource(kind), namespace, labels=labels or None, fields=fields or None
            )
        except ApiError as err:
            raise _translate(err, describe("list", kind, namespace)) from None
        return listing.items

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str:
        what = f"get pods/proxy {pod}:{port} in namespace {namespace}"
        url = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"
        try:
            return await self._client.get_text(url)
        except ApiError as err:
            raise _translate(err, what) from None
