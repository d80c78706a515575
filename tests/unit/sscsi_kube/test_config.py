"""Finding the apiserver: in-cluster service account, kubeconfig files (YAML or JSON, relative paths,
contexts), $KUBECONFIG, and the credentials we refuse to guess at."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sscsi_kube import KubeClient, config
from sscsi_kube.config import ConfigError, default_namespace, endpoint
from sscsi_kube.resources import SECRET

from unit.sscsi_kube.tls_kit import Pki, Seen, Server, answer, make_pki, server_tls

YAML = """\
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: pki/ca.crt
- name: other
  cluster: {{server: "http://10.0.0.1"}}
users:
- name: admin
  user: {{client-certificate: pki/client.crt, client-key: pki/client.key}}
contexts:
- name: main
  context: {{cluster: local, user: admin, namespace: apps}}
- name: elsewhere
  context: {{cluster: other}}
current-context: main
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def ok(seen: Seen) -> bytes:
    return answer(200, json.dumps({"auth": seen.headers.get("authorization"), "cn": seen.client_cn}).encode())


async def test_a_yaml_kubeconfig_with_paths_relative_to_its_directory(pki: Pki, tmp_path: Path) -> None:
    shutil.copytree(pki.ca.parent, tmp_path / "pki")
    async with Server(ok, server_tls(pki)) as server:
        path = tmp_path / "config"
        path.write_text(YAML.format(port=server.port))
        api = KubeClient.from_config(str(path), "t")
        assert await api.get(SECRET, "s", "ns") == {"auth": None, "cn": "tester"}
        await api.close()
    assert default_namespace(str(path)) == "apps"
    other = endpoint(str(path), context="elsewhere")
    assert (other.host, other.port, other.tls, other.namespace) == ("10.0.0.1", 80, None, "default")
    with pytest.raises(ConfigError):
        endpoint(str(path), context="nowhere")


async def test_in_cluster_service_account_comes_first(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("sa-token\n")
    (account / "namespace").write_text("kube-system")
    shutil.copy(pki.ca, account / "ca.crt")
    monkeypatch.setattr(config, "SERVICE_ACCOUNT", str(account))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    async with Server(ok, server_tls(pki, require_client_cert=False)) as server:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        api = KubeClient.from_config(None, "t")
        assert await api.get(SECRET, "s", "ns") == {"auth": "Bearer sa-token", "cn": None}
        await api.close()
    assert default_namespace(None) == "kube-system"


def test_kubeconfig_env_list_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    doc = {
        "clusters": [{"name": "c", "cluster": {"server": "https://[::1]:6443/"}}],
        "users": [{"name": "u", "user": {"username": "a", "password": "b"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "from-env"}}],
        "current-context": "x",
    }
    (tmp_path / "second").write_text(json.dumps(doc))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'first'}:{tmp_path / 'second'}")
    found = endpoint(None)
    assert (found.namespace, found.authority, found.base_path) == ("from-env", "[::1]:6443", "")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(
        json.dumps(doc | {"contexts": [{"name": "x", "context": {"cluster": "c"}}]})
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG")
    assert endpoint(None).namespace == "default"
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    with pytest.raises(ConfigError):
        endpoint(None)


@pytest.mark.parametrize(
    "user",
    [
        {"auth-provider": {"name": "gcp"}},
        {"exec": {"apiVersion": "client.authentication.k8s.io/v9", "command": "x"}},
    ],
    ids=["auth-provider", "exec-api-version"],
)
def test_credentials_we_cannot_use_are_refused(tmp_path: Path, user: dict[str, object]) -> None:
    doc = {
        "clusters": [{"name": "c", "cluster": {"server": "https://k8s"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "kc").write_text(json.dumps(doc))
    with pytest.raises(ConfigError):
        endpoint(str(tmp_path / "kc"))
