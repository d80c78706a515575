"""Fixtures for the end-to-end tests, which run against the real local control plane.

Every test under tests/e2e is marked `e2e`. A failing e2e test's report names the
control-plane logs directory (etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and the apiserver audit log).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cluster import FIELD_MANAGER, Cluster, ClusterSettings, ClusterUpError, ensure_cluster
from sscsi_kube import KubeClient
from sscsi_kube.resources import NAMESPACE

E2E_DIR = Path(__file__).resolve().parent
SETTINGS = ClusterSettings.from_environment()
NAMESPACE_LABEL = "app.kubernetes.io/managed-by"
USER_AGENT = f"{FIELD_MANAGER}/tests"
T = TypeVar("T")


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


def admin_call(cluster: Cluster, call: Callable[[KubeClient], Awaitable[T]]) -> T:
    """One call with an admin client from synchronous code (fixtures): on a loop of its own, which
    leaves the tests' event loop alone."""

    async def run() -> T:
        client = KubeClient.from_config(str(cluster.kubeconfig), USER_AGENT)
        try:
            return await call(client)
        finally:
            await client.close()

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    """The project's Kubernetes client (sscsi_kube) with admin rights, bound to the test's event loop."""
    client = KubeClient.from_config(str(cluster.kubeconfig), USER_AGENT)
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
def namespace(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards (without waiting for it to go)."""
    name = namespace_name(request.node.name)
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {NAMESPACE_LABEL: FIELD_MANAGER}},
    }
    admin_call(cluster, lambda kube: kube.create(NAMESPACE, body))
    yield name
    admin_call(cluster, lambda kube: kube.delete(NAMESPACE, name, missing_ok=True))


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
