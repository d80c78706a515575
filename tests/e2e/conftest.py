"""Fixtures for the end-to-end tests, which run against the real local control plane.

Every test under tests/e2e is marked `e2e`. A failing e2e test's report names the
control-plane logs directory (etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and the apiserver audit log).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
from cluster import FIELD_MANAGER, Cluster, ClusterSettings, ClusterUpError, ensure_cluster
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

E2E_DIR = Path(__file__).resolve().parent
SETTINGS = ClusterSettings.from_environment()
NAMESPACE_LABEL = "app.kubernetes.io/managed-by"


def _is_e2e(item: pytest.Item) -> bool:
    return item.path.resolve().is_relative_to(E2E_DIR)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_e2e(item):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _is_e2e(item):
        report.sections.append(("control-plane logs", f"control-plane logs: {SETTINGS.logs_dir}"))
    return report


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The local control plane: reused when it already runs, else started by hack/cluster-up.sh.

    It is deliberately NOT stopped at the end of the session, so the next run starts in well
    under a second; `make cluster-down` (hack/cluster-down.sh) stops it.
    """
    try:
        return ensure_cluster(SETTINGS)
    except ClusterUpError as err:
        message = str(err)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def kube_config(cluster: Cluster) -> KubeConfig:
    return KubeConfig.from_file(cluster.kubeconfig)


@pytest.fixture(scope="session")
def kube_sync(kube_config: KubeConfig) -> Iterator[Client]:
    """A synchronous lightkube client with admin rights (shared by the session)."""
    client = Client(kube_config, field_manager=FIELD_MANAGER)
    yield client
    client.close()


@pytest.fixture
async def kube(kube_config: KubeConfig) -> AsyncIterator[AsyncClient]:
    """An async lightkube client with admin rights, bound to the test's event loop."""
    client = AsyncClient(kube_config, field_manager=FIELD_MANAGER)
    try:
        yield client
    finally:
        await client.close()


def namespace_name(test_name: str) -> str:
    """t-<test name, shortened>-<random>: a valid DNS-1123 label, unique per call."""
    stem = re.sub(r"^test_", "", test_name.lower())
    stem = re.sub(r"[^a-z0-9]+", "-", stem)[:44].strip("-") or "x"
    return f"t-{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_sync: Client) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards (without waiting for it to go)."""
    name = namespace_name(request.node.name)
    kube_sync.create(Namespace(metadata=ObjectMeta(name=name, labels={NAMESPACE_LABEL: FIELD_MANAGER})))
    yield name
    try:
        kube_sync.delete(Namespace, name)
    except ApiError as err:
        if err.status.code != 404:
            raise


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    """SecretProviderClass and SecretProviderClassPodStatus CRDs, installed once and Established."""
    root = Path(__file__).resolve().parents[2] / "assets" / "crds"
    out = cluster.kubectl("apply", "--server-side", "-f", str(root))
    assert out.returncode == 0, out.stderr
    out = cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(root))
    assert out.returncode == 0, out.stderr


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from harness.summary import SUMMARY_LINES

    for line in config.stash.get(SUMMARY_LINES, []):
        terminalreporter.write_line(line)
