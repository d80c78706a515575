"""Inline volumes through the real kubelet (upstream e2e-provider.bats 5-13), served by our reference
provider and by upstream's own e2e provider (a wire check that does not share our reading of the
provider protocol)."""

from __future__ import annotations

import pytest
from nodekit import MOCK_KEY, app_pod_spec, host_mounts_under, spc, wait_for, wait_pod_ready
from nodesetup import UPSTREAM_PROVIDER, Installation


def _pod(name: str, spc_name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": app_pod_spec([("secrets-store-inline", spc_name, "/mnt/secrets-store")]),
    }


@pytest.mark.parametrize("provider", ["e2e-provider", UPSTREAM_PROVIDER])
@pytest.mark.parametrize("api_version", ["v1alpha1", "v1"])
def test_inline_volume_reads_foo_and_fookey(
    installation: Installation, ns: str, api_version: str, provider: str
) -> None:
    kube = installation.kube
    kube.apply(spc("e2e-provider", api_version=api_version, provider=provider), ns)
    kube.apply(_pod("secrets-store-inline-crd", "e2e-provider"), ns)
    wait_pod_ready(kube, "secrets-store-inline-crd", ns)
    assert kube.exec("secrets-store-inline-crd", ns, "cat", "/mnt/secrets-store/foo") == "secret"
    assert MOCK_KEY in kube.exec("secrets-store-inline-crd", ns, "cat", "/mnt/secrets-store/fookey")


def test_unmount_on_pod_delete(installation: Installation, ns: str) -> None:
    kube = installation.kube
    kube.apply(spc("e2e-provider"), ns)
    kube.apply(_pod("secrets-store-inline-crd", "e2e-provider"), ns)
    wait_pod_ready(kube, "secrets-store-inline-crd", ns)
    uid = kube.get("pod", "secrets-store-inline-crd", ns)["metadata"]["uid"]
    pod_dir = f"/var/lib/kubelet/pods/{uid}"
    assert any("kubernetes.io~csi" in m for m in host_mounts_under(pod_dir)), "the driver's tmpfs is mounted"
    kube.delete("pod", "secrets-store-inline-crd", ns)
    wait_for(
        "the volume's mounts to go",
        lambda: not any("kubernetes.io~csi" in m for m in host_mounts_under(pod_dir)),
        60,
    )
    logs = installation.driver_logs()
    assert "failed to clean and unmount target path" not in logs
