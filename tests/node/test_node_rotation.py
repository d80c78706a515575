"""Rotation of the mounted file and the synced Secret (upstream e2e-provider.bats 24-25).

Upstream waits 120 s with --rotation-poll-interval=30s; here the ClusterCSIDriver asks for a
short minimumRefreshAge (nodesetup.ROTATION_SECONDS) and kubelet republishes every sync.
Both providers: ours and upstream's own e2e provider (its /rotation switch serves "rotated" to the
pods that mounted before).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nodekit import app_pod_spec, secret_env, spc, wait_for, wait_pod_ready
from nodesetup import ROTATION_SECONDS, UPSTREAM_PROVIDER, Installation


@pytest.fixture(params=["e2e-provider", UPSTREAM_PROVIDER])
def provider(installation: Installation, request: pytest.FixtureRequest) -> Iterator[str]:
    """The provider under test; its rotation switch is turned off again afterwards."""
    yield request.param
    installation.provider_control("/rotation?rotated=false", request.param)


def test_rotation_of_file_and_secret(installation: Installation, ns: str, provider: str) -> None:
    kube = installation.kube
    kube.apply(
        spc(
            "e2e-provider-auto-rotation",
            provider=provider,
            objects=("foo",),
            secret_objects=[
                {
                    "secretName": "rotationsecret",
                    "type": "Opaque",
                    "data": [{"objectName": "foo", "key": "username"}],
                }
            ],
        ),
        ns,
    )
    name = "secrets-store-inline-rotation"
    spec = app_pod_spec(
        [("secrets-store-inline", "e2e-provider-auto-rotation", "/mnt/secrets-store")],
        env=[secret_env("SECRET_USERNAME", "rotationsecret", "username")],
    )
    kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}, ns)
    wait_pod_ready(kube, name, ns)
    assert kube.exec(name, ns, "cat", "/mnt/secrets-store/foo") == "secret"
    assert kube.secret_data("rotationsecret", ns) == {"username": "secret"}

    installation.provider_control("/rotation?rotated=true", provider)
    timeout = 90 + 4 * ROTATION_SECONDS
    wait_for(
        "the mounted file to rotate",
        lambda: kube.exec(name, ns, "cat", "/mnt/secrets-store/foo") == "rotated",
        timeout,
        interval=2,
    )
    wait_for(
        "the synced Secret to rotate",
        lambda: kube.secret_data("rotationsecret", ns) == {"username": "rotated"},
        60,
        interval=2,
    )
