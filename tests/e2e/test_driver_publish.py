"""The node plugin driven exactly as kubelet drives it, on the real control plane."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness.audit_log import audit_events
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, events_for, read_volume, wait_for
from sscsi_driver import mounter
from sscsi_kube import ApiError
from sscsi_kube.resources import EVENT, NAMESPACE, POD, SECRET, SPC, SPCPS

MANIFESTS = Path(__file__).parent / "manifests"
FOOKEY = "-----BEGIN PUBLIC KEY-----\nThis is mock key\n-----END PUBLIC KEY-----\n"
FOO_OBJECTS = objects_param(
    {"objectName": "foo", "objectVersion": "v1"}, {"objectName": "fookey", "objectVersion": "v1"}
)


@pytest.fixture(scope="module")
async def env(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    # the most verbose level the driver has: secrets must stay out of the logs even here
    async with driver_env(
        cluster.kubeconfig, cluster.logs_dir / "driver-publish", extra_args=("-v=10",)
    ) as e:
        yield e


async def test_upstream_sample_spcs_apply(cluster: Any, crds: None, namespace: str) -> None:
    for name in (
        "spc-v1-e2e-provider.yaml",
        "spc-v1alpha1-e2e-provider.yaml",
        "spc-v1-e2e-provider-sync.yaml",
    ):
        out = cluster.kubectl("apply", "-n", namespace, "-f", str(MANIFESTS / name))
        assert out.returncode == 0, out.stderr
    got = cluster.kubectl("get", "secretproviderclasses", "-n", namespace, "-o", "name")
    assert sorted(got.stdout.split()) == [
        "secretproviderclass.secrets-store.csi.x-k8s.io/e2e-provider",
        "secretproviderclass.secrets-store.csi.x-k8s.io/e2e-provider-sync",
    ]


@pytest.mark.parametrize("manifest", ["spc-v1-e2e-provider.yaml", "spc-v1alpha1-e2e-provider.yaml"])
async def test_inline_volume_gets_foo_and_fookey(
    env: DriverEnv, cluster: Any, namespace: str, manifest: str
) -> None:
    assert cluster.kubectl("apply", "-n", namespace, "-f", str(MANIFESTS / manifest)).returncode == 0
    pod = await create_pod(
        env.api,
        pod_manifest(
            "secrets-store-inline-crd",
            namespace,
            env.node,
            [csi_volume("secrets-store-inline", "e2e-provider")],
        ),
    )
    [result] = await env.kubelet.publish_pod(pod)
    assert result.ok, result.error
    target = result.target
    assert mounter.is_mount_point(target) and mounter.is_tmpfs(target)
    assert read_volume(target) == {"foo": "secret", "fookey": FOOKEY}
    # atomic-writer layout: user-visible names are symlinks into ..data
    assert os.readlink(target / "foo") == "..data/foo"
    assert (target / "..data").is_symlink()

    meta = pod["metadata"]
    spcps = await env.api.get(SPCPS, f"{meta['name']}-{namespace}-e2e-provider", namespace)
    assert spcps["metadata"]["labels"]["internal.secrets-store.csi.k8s.io/node-name"] == env.node
    assert spcps["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
    ]
    assert spcps["status"] == {
        "podName": meta["name"],
        "secretProviderClassName": "e2e-provider",
        "mounted": True,
        "targetPath": str(target),
        "objects": [{"id": "secret/foo", "version": "v1"}, {"id": "secret/fookey", "version": "v1"}],
    }

    # a second identical publish succeeds without mounting again
    [again] = await env.kubelet.publish_pod(pod)
    assert again.ok
    assert mounter.mounts_under(target) == [target]

    [gone] = await env.kubelet.unpublish_pod(pod)
    assert gone.ok
    assert not target.exists()
    assert mounter.mounts_under(target.parent) == []
    # unpublish is idempotent
    [twice] = await env.kubelet.unpublish_pod(pod)
    assert twice.ok


async def test_pod_deletion_garbage_collects_spcps(env: DriverEnv, namespace: str) -> None:
    await env.api.create(SPC, spc_manifest("gc-spc", namespace, FOO_OBJECTS), namespace)
    pod = await create_pod(env.api, pod_manifest("gc-pod", namespace, env.node, [csi_volume("v", "gc-spc")]))
    [result] = await env.kubelet.publish_pod(pod)
    assert result.ok, result.error
    name = f"gc-pod-{namespace}-gc-spc"
    assert (await env.api.get(SPCPS, name, namespace))["status"]["mounted"] is True
    await env.kubelet.unpublish_pod(pod)
    await env.api.request("DELETE", POD.path(namespace, "gc-pod"), params={"gracePeriodSeconds": 0})

    async def spcps_gone() -> bool:
        try:
            await env.api.get(SPCPS, name, namespace)
            return False
        except ApiError as err:
            return err.not_found

    await wait_for(spcps_gone, timeout=90)


async def test_a_pod_landing_starts_its_namespaces_spc_watch_before_kubelet_publishes(
    env: DriverEnv, cluster: Any, namespace: str
) -> None:
    """The first publish in a namespace reads a warm cache: the driver watches its node's pods and opens
    the namespace's SPC watch as a pod with one of our volumes lands, not when kubelet publishes."""
    since = time.time()
    other = f"{namespace}-b"  # holds pods that must not open a watch
    await env.api.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    try:
        no_ours = pod_manifest("no-csi", other, env.node, [])
        elsewhere = pod_manifest("elsewhere", other, "sscsi-another-node", [csi_volume("v", "spc")])
        for manifest in (no_ours, elsewhere):
            await create_pod(env.api, manifest)
        await env.api.create(SPC, spc_manifest("land-spc", namespace, FOO_OBJECTS), namespace)
        pod = await create_pod(
            env.api, pod_manifest("landing", namespace, env.node, [csi_volume("v", "land-spc")])
        )

        def spc_watches(ns: str) -> list[dict[str, Any]]:
            def match(event: dict[str, Any]) -> bool:
                ref = event.get("objectRef") or {}
                return bool(
                    event["verb"] == "watch"
                    and ref.get("resource") == "secretproviderclasses"
                    and ref.get("namespace") == ns
                    and str(event.get("userAgent", "")).startswith("secrets-store-csi-py/driver/")
                )

            return audit_events(cluster.logs_dir, since, f'"namespace":"{ns}"', match)

        async def watching() -> bool:
            return bool(spc_watches(namespace))

        await wait_for(watching, timeout=10)  # no publish yet
        # the other namespace's pods came first in the node's pod watch, had they been on this node
        assert spc_watches(other) == []
        [result] = await env.kubelet.publish_pod(pod)
        assert result.ok, result.error
    finally:
        await env.api.delete(NAMESPACE, other, missing_ok=True)


def error_total(metrics: str, error_type: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("node_publish_error_total{") and f'error_type="{error_type}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


BAD_INPUTS = [
    # case id, SPC objects (None: no SPC), provider, fault, expected code, message regex, error_type
    (
        "spc-missing",
        None,
        "e2e-provider",
        None,
        grpc.StatusCode.UNKNOWN,
        r"failed to get secretproviderclass {ns}/bad-spc.*not found",
        "SecretProviderClassNotFound",
    ),
    (
        "provider-absent",
        FOO_OBJECTS,
        "not-installed",
        None,
        grpc.StatusCode.UNKNOWN,
        r'provider not found: provider "not-installed"',
        "",
    ),
    (
        "provider-invalid-name",
        FOO_OBJECTS,
        "bad.name/x",
        None,
        grpc.StatusCode.UNKNOWN,
        r'invalid provider: provider "bad.name/x"',
        "",
    ),
    (
        "provider-error-code",
        FOO_OBJECTS,
        "e2e-provider",
        "/fault?mode=error-code&code=VaultDenied",
        grpc.StatusCode.UNKNOWN,
        r"mount request failed with provider error code VaultDenied",
        "VaultDenied",
    ),
    (
        "provider-no-versions",
        FOO_OBJECTS,
        "e2e-provider",
        "/fault?mode=no-versions",
        grpc.StatusCode.UNKNOWN,
        r"returned no object versions",
        "GRPCProviderError",
    ),
    (
        "path-escapes-target",
        FOO_OBJECTS,
        "e2e-provider",
        "/fault?mode=bad-path",
        grpc.StatusCode.UNKNOWN,
        r"\.\./escape",
        "FileWriteError",
    ),
    (
        "oversized-response",
        objects_param({"objectName": "big", "objectSize": 5 * 1024 * 1024}),
        "e2e-provider",
        None,
        grpc.StatusCode.UNKNOWN,
        r"max-call-recv-msg-size",
        "GRPCProviderError",
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
async def test_bad_input_gets_a_clear_error(env: DriverEnv, namespace: str, case: tuple[Any, ...]) -> None:
    case_id, objects, provider, fault, code, pattern, error_type = case
    if objects is not None:
        await env.api.create(SPC, spc_manifest("bad-spc", namespace, objects, provider=provider), namespace)
    before = error_total(env.metrics(), error_type)
    if fault:
        env.provider_control(fault)
    try:
        pod = await create_pod(
            env.api, pod_manifest(f"bad-{case_id}", namespace, env.node, [csi_volume("v", "bad-spc")])
        )
        [result] = await env.kubelet.publish_pod(pod)
    finally:
        if fault:
            env.provider_control("/fault?mode=none")
    assert result.error is not None, "publish should have failed"
    assert result.error.code() == code
    assert re.search(pattern.format(ns=namespace), result.error.details() or ""), result.error.details()
    # no tmpfs left behind, so kubelet's retry starts clean
    assert mounter.mounts_under(result.target.parent) == []
    assert not result.target.exists()
    assert error_total(env.metrics(), error_type) == before + 1
    events = await events_for(env.api, namespace, pod["metadata"]["name"])
    assert any(
        e["reason"] == "FailedMount" and re.search(pattern.format(ns=namespace), e["message"]) for e in events
    )


async def test_readonly_false_is_invalid_argument(env: DriverEnv, namespace: str) -> None:
    await env.api.create(SPC, spc_manifest("ro-spc", namespace, FOO_OBJECTS), namespace)
    pod = await create_pod(
        env.api, pod_manifest("rw-pod", namespace, env.node, [csi_volume("v", "ro-spc", read_only=False)])
    )
    [result] = await env.kubelet.publish_pod(pod)
    assert result.error is not None and result.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Readonly is not true in request" in (result.error.details() or "")
    assert mounter.mounts_under(result.target.parent) == []


async def test_missing_volume_context_is_invalid_argument(env: DriverEnv) -> None:
    from sscsi_proto import csi_pb2

    target = env.kubelet_root / "pods" / "uid-x" / "volumes" / "kubernetes.io~csi" / "v" / "mount"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.kubelet.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id="csi-x",
                target_path=str(target),
                readonly=True,
                volume_capability=csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume()),
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Volume attributes missing in request"


async def test_target_outside_kubelet_dir_is_refused(env: DriverEnv, tmp_path: Path) -> None:
    from sscsi_proto import csi_pb2

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.kubelet.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id="csi-y",
                target_path=str(tmp_path / "elsewhere"),
                readonly=True,
                volume_capability=csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume()),
                volume_context={"secretProviderClass": "x"},
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside the kubelet pods directory" in (info.value.details() or "")
    assert not (tmp_path / "elsewhere").exists()


async def test_secret_material_never_logged(env: DriverEnv, namespace: str) -> None:
    planted_secret = "planted-nodepublish-c0ffee"
    planted_content = "planted-content-f00d"
    await env.api.create(
        SECRET,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"clientSecret": planted_secret},
        },
        namespace,
    )
    objects = objects_param({"objectName": "pw", "objectContent": planted_content})
    await env.api.create(SPC, spc_manifest("log-spc", namespace, objects), namespace)
    pod = await create_pod(
        env.api,
        pod_manifest("log-pod", namespace, env.node, [csi_volume("v", "log-spc", secret_ref="creds")]),
    )
    [result] = await env.kubelet.publish_pod(pod)
    assert result.ok, result.error
    assert (result.target / "pw").read_text() == planted_content
    await env.kubelet.unpublish_pod(pod)
    logs = env.driver.log() + env.provider.log()
    assert "NodePublishVolume" in env.driver.log()  # -v=5 request logging is on, so the check means something
    assert planted_secret not in logs
    assert planted_content not in logs
    spcps = await env.api.get(SPCPS, f"log-pod-{namespace}-log-spc", namespace)
    assert planted_content not in str(spcps) and planted_secret not in str(spcps)
    metrics = env.metrics()
    assert planted_content not in metrics and planted_secret not in metrics
    events = str(await env.api.list(EVENT, namespace))
    assert planted_content not in events and planted_secret not in events


async def test_metrics_have_upstream_names(env: DriverEnv) -> None:
    text = env.metrics()
    for name in ("node_publish_total", "node_unpublish_total", "node_publish_error_total"):
        assert re.search(rf"^{name}\{{", text, re.M), name
    assert 'os_type="linux"' in text


def test_identity(cluster: Any, env: DriverEnv) -> None:
    out = subprocess.run(
        [str(Path(os.sys.executable).parent / "secrets-store-csi-driver"), "--version"],
        capture_output=True,
        text=True,
    )
    assert '"BuildVersion"' in out.stdout


async def test_service_account_tokens_reach_the_provider(env: DriverEnv, namespace: str) -> None:
    """CSIDriver.tokenRequests: kubelet mints tokens, the driver passes them on, never logs them."""
    from harness.kubelet import CSIDRIVER

    csidriver = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": "secrets-store.csi.k8s.io"},
        "spec": {
            "podInfoOnMount": True,
            "attachRequired": False,
            "volumeLifecycleModes": ["Ephemeral"],
            "tokenRequests": [{"audience": "aud1"}, {"audience": "aud2", "expirationSeconds": 600}],
        },
    }
    existing = None
    try:
        existing = await env.api.get(CSIDRIVER, "secrets-store.csi.k8s.io")
    except ApiError as err:
        assert err.not_found
    if existing is not None:
        pytest.skip("a CSIDriver is installed by another test (operator); not touching it")
    await env.api.create(CSIDRIVER, csidriver)
    try:
        await env.api.create(SPC, spc_manifest("tok-spc", namespace, FOO_OBJECTS), namespace)
        env.provider_control("/validate-token-requests?audience=aud1,aud2")
        pod = await create_pod(
            env.api, pod_manifest("tok-pod", namespace, env.node, [csi_volume("v", "tok-spc")])
        )
        [ok] = await env.kubelet.publish_pod(pod)
        assert ok.ok, ok.error
        await env.kubelet.unpublish_pod(pod)

        env.provider_control("/validate-token-requests?audience=aud1,aud3")
        [missing] = await env.kubelet.publish_pod(pod)
        assert missing.error is not None and "aud3" in (missing.error.details() or "")
        assert mounter.mounts_under(missing.target.parent) == []
        token_prefix = "eyJ"  # every service-account JWT starts with this
        assert token_prefix not in env.driver.log()
    finally:
        env.provider_control("/validate-token-requests?audience=")
        await env.api.delete(CSIDRIVER, "secrets-store.csi.k8s.io")
