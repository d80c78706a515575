"""The adapter over the Kubernetes layer: the apiserver's refusals become the seam's outcomes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sscsi_cli.access import CSI_NODE, POD, Forbidden, NotFound, Unreachable
from sscsi_cli.kube_cluster import KubeCluster
from sscsi_cli.main import main
from sscsi_kube import ApiError, Listing


class Refusing:
    """A KubeClient stand-in answering every call with one ApiError (or a body)."""

    def __init__(self, error: ApiError | None = None, text: str = "") -> None:
        self.error, self.text, self.paths = error, text, []

    async def get(self, res: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        if self.error:
            raise self.error
        return {"metadata": {"name": name}}

    async def list_all(self, res: Any, namespace: str | None = None, **kw: Any) -> Listing:
        if self.error:
            raise self.error
        return Listing([{"metadata": {"name": "a"}}], "1")

    async def get_text(self, path: str) -> str:
        self.paths.append(path)
        if self.error:
            raise self.error
        return self.text


def _cluster(client: Refusing) -> KubeCluster:
    return KubeCluster(client)  # type: ignore[arg-type]


def test_forbidden_names_what_was_refused() -> None:
    cluster = _cluster(Refusing(ApiError(403, "Forbidden", "csinodes is forbidden")))
    with pytest.raises(Forbidden) as err:
        asyncio.run(cluster.get(CSI_NODE, "n1"))
    assert err.value.what == "get csinodes.storage.k8s.io n1"
    with pytest.raises(Forbidden) as err:
        asyncio.run(cluster.list(POD, None, fields="spec.nodeName=n1"))
    assert err.value.what == "list pods in all namespaces"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ApiError(404, "NotFound", "x"), NotFound),
        (ApiError(401, "Unauthorized", ""), Unreachable),
        (ApiError(503, "ServiceUnavailable", "apiserver unreachable"), Unreachable),
    ],
)
def test_other_outcomes(error: ApiError, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        asyncio.run(_cluster(Refusing(error)).get(POD, "p", "ns"))


def test_metrics_through_the_pod_proxy() -> None:
    client = Refusing(text="node_publish_total 1\n")
    body = asyncio.run(_cluster(client).pod_proxy_get("drv", "driver-x", 8095, "metrics"))
    assert body == "node_publish_total 1\n"
    assert client.paths == ["/api/v1/namespaces/drv/pods/driver-x:8095/proxy/metrics"]


def test_unusable_kubeconfig_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "--kubeconfig", str(tmp_path / "missing")])
    assert code == 4
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load the Kubernetes configuration") and "Traceback" not in err


def test_namespace_and_context_come_from_the_kubeconfig(tmp_path: Path) -> None:
    """Without -n the pod is looked up in the context's namespace, as kubectl does; --context picks one."""
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
        "contexts:\n"
        "- {name: a, context: {cluster: c, user: u, namespace: team-a}}\n"
        "- {name: b, context: {cluster: c, user: u}}\n"
    )

    async def namespaces() -> list[str]:
        out = []
        for context in (None, "b"):
            cluster = KubeCluster.connect(str(path), context)
            out.append(cluster.namespace)
            await cluster.close()
        return out

    assert asyncio.run(namespaces()) == ["team-a", "default"]
