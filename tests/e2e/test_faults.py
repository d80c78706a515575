"""Faults: the driver killed mid-operation, hostile concurrency. Nothing lost, nothing leaked.

Each test records what it injected and checked; the module prints one summary line:
`faults injected=<n> volumes checked=<n> bytes lost=<n>` (bytes lost must be 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, read_volume
from harness.summary import add_summary_line
from sscsi_driver import mounter
from sscsi_kube.resources import SPC

INTERVAL = 2.0


@dataclass
class Tally:
    faults: int = 0
    volumes: int = 0
    bytes_lost: int = 0

    def check_volume(self, target: Path, expected: dict[str, str]) -> None:
        """A volume is whole: exactly the expected files, one tmpfs, nothing missing."""
        self.volumes += 1
        got = read_volume(target)
        for name, value in expected.items():
            if got.get(name) != value:
                self.bytes_lost += len(value.encode())
        assert got == expected
        assert mounter.mounts_under(target) == [target], "exactly one tmpfs, no stacked or leaked mounts"


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    line = (
        f"fault matrix: faults injected={TALLY.faults} volumes checked={TALLY.volumes}"
        f" bytes lost={TALLY.bytes_lost}"
    )
    add_summary_line(request.config, line)
    assert TALLY.bytes_lost == 0


@pytest.fixture(scope="module")
async def fenv(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-faults",
        node="sscsi-node-faults",
        rotation=True,
        rotation_interval=f"{INTERVAL}s",
    ) as e:
        yield e
        e.provider_control("/fault?mode=none")
        e.provider_control("/rotation?rotated=false")


PAIR = objects_param(
    {"objectName": "user", "objectContent": "alice"}, {"objectName": "password", "objectContent": "s3cret"}
)


async def make_pod(env: DriverEnv, namespace: str, name: str, spc: str = "pair") -> dict[str, Any]:
    return await create_pod(env.api, pod_manifest(name, namespace, env.node, [csi_volume("v", spc)]))


async def test_killed_during_first_publish_then_kubelet_retries(fenv: DriverEnv, namespace: str) -> None:
    await fenv.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
    pod = await make_pod(fenv, namespace, "first")
    fenv.provider_control("/fault?mode=slow&seconds=3")
    publish = asyncio.create_task(fenv.kubelet.publish_pod(pod, post_events=False))
    await asyncio.sleep(1.0)  # the tmpfs is mounted, the provider call is in flight
    fenv.kill_driver()
    TALLY.faults += 1
    [interrupted] = await publish
    assert not interrupted.ok
    fenv.provider_control("/fault?mode=none")
    await fenv.restart_driver()
    [retried] = await fenv.kubelet.publish_pod(pod)
    assert retried.ok, retried.error
    TALLY.check_volume(retried.target, {"user": "alice", "password": "s3cret"})
    [gone] = await fenv.kubelet.unpublish_pod(pod)
    assert gone.ok and not gone.target.exists()


async def test_killed_during_refresh_keeps_old_files_then_refreshes(fenv: DriverEnv, namespace: str) -> None:
    await fenv.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
    pod = await make_pod(fenv, namespace, "refresh")
    [first] = await fenv.kubelet.publish_pod(pod)
    assert first.ok, first.error
    await asyncio.sleep(INTERVAL + 0.2)
    fenv.provider_control("/fault?mode=slow&seconds=3")
    refresh = asyncio.create_task(fenv.kubelet.republish_pod(pod))
    await asyncio.sleep(1.0)
    fenv.kill_driver()
    TALLY.faults += 1
    await refresh
    TALLY.check_volume(first.target, {"user": "alice", "password": "s3cret"})  # old, whole, still mounted
    fenv.provider_control("/fault?mode=none")
    fenv.provider_control("/rotation?rotated=true")
    try:
        await fenv.restart_driver()
        [again] = await fenv.kubelet.republish_pod(pod)  # state is recovered from the node: refresh now
        assert again.ok, again.error
        TALLY.check_volume(first.target, {"user": "rotated", "password": "rotated"})
    finally:
        fenv.provider_control("/rotation?rotated=false")
    [gone] = await fenv.kubelet.unpublish_pod(pod)
    assert gone.ok and not gone.target.exists()


async def test_killed_then_unpublish_after_restart(fenv: DriverEnv, namespace: str) -> None:
    await fenv.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
    pod = await make_pod(fenv, namespace, "unpub")
    [first] = await fenv.kubelet.publish_pod(pod)
    assert first.ok, first.error
    fenv.kill_driver()
    TALLY.faults += 1
    await fenv.restart_driver()
    [gone] = await fenv.kubelet.unpublish_pod(pod)
    assert gone.ok, gone.error
    assert not first.target.exists()
    assert mounter.mounts_under(first.target.parent) == []


async def test_110_concurrent_publishes_and_unpublishes(fenv: DriverEnv, namespace: str) -> None:
    await fenv.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
    pods = await asyncio.gather(*(make_pod(fenv, namespace, f"c{i}") for i in range(110)))
    # every pod published at once, and the first ten twice at the same time (kubelet retry racing)
    results = await asyncio.gather(*(fenv.kubelet.publish_pod(p) for p in pods + pods[:10]))
    for [res] in results:
        assert res.ok, res.error
    for pod in pods:
        target = fenv.kubelet.target_path(pod["metadata"]["uid"], "v")
        TALLY.check_volume(target, {"user": "alice", "password": "s3cret"})
    unpublished = await asyncio.gather(*(fenv.kubelet.unpublish_pod(p) for p in pods + pods[:10]))
    for [res] in unpublished:
        assert res.ok, res.error
    assert mounter.mounts_under(fenv.kubelet_root) == []


async def test_apiserver_unreachable_during_publish_and_refresh(
    cluster: Any, crds: None, namespace: str, tmp_path: Path
) -> None:
    """The driver talks to the apiserver through a proxy we cut: clear errors, recovery, one SPCPS."""
    import yaml
    from harness.proxy import CuttableProxy
    from sscsi_kube.resources import SPCPS

    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    await proxy.start()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig = tmp_path / "via-proxy.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    async with driver_env(
        kubeconfig,
        cluster.logs_dir / "driver-apiserver-cut",
        node="sscsi-node-cut",
        rotation=True,
        rotation_interval=f"{INTERVAL}s",
    ) as env:
        await env.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
        warm = await make_pod(env, namespace, "warm")
        [ok] = await env.kubelet.publish_pod(warm)  # the driver now watches this namespace's SPCs
        assert ok.ok, ok.error
        cold = await make_pod(env, namespace, "cold")

        await proxy.cut()
        TALLY.faults += 1
        [failed] = await env.kubelet.publish_pod(cold, post_events=False)
        assert failed.error is not None
        assert "secret provider class pod status" in (failed.error.details() or "")
        assert mounter.mounts_under(failed.target.parent) == [], "no tmpfs left for kubelet's retry"

        # a refresh while the apiserver is away still updates the files (provider is reachable)
        env.provider_control("/rotation?rotated=true")
        try:
            await asyncio.sleep(INTERVAL + 0.2)
            [refreshed] = await env.kubelet.republish_pod(warm)
            assert refreshed.ok
            TALLY.check_volume(ok.target, {"user": "rotated", "password": "rotated"})

            await proxy.restore()
            [retried] = await env.kubelet.publish_pod(cold)
            assert retried.ok, retried.error
            TALLY.check_volume(retried.target, {"user": "rotated", "password": "rotated"})
            await asyncio.sleep(INTERVAL + 0.2)
            [again] = await env.kubelet.republish_pod(warm)
            assert again.ok
        finally:
            env.provider_control("/rotation?rotated=false")
        # exactly one SPCPS per pod, and the warm one caught up with the rotation
        listed = await env.api.list(SPCPS, namespace)
        names = sorted(o["metadata"]["name"] for o in listed["items"])
        assert names == [f"cold-{namespace}-pair", f"warm-{namespace}-pair"]
        warm_status = await env.api.get(SPCPS, f"warm-{namespace}-pair", namespace)
        assert {o["version"] for o in warm_status["status"]["objects"]} == {"v2"}
        for pod in (warm, cold):
            await env.kubelet.unpublish_pod(pod)
    await proxy.cut()


GARBAGE = {
    "duplicate-paths": objects_param(
        {"objectName": "a", "objectAlias": "same"}, {"objectName": "b", "objectAlias": "same"}
    ),
    "reserved-name": objects_param({"objectName": "a", "objectAlias": "..data/evil"}),
    "absolute-path": objects_param({"objectName": "a", "objectAlias": "/etc/evil"}),
    "dot-dot-inside": objects_param({"objectName": "a", "objectAlias": "x/../../evil"}),
    "unclean-path": objects_param({"objectName": "a", "objectAlias": "x//y"}),
}


EXPECTED_RULE = {
    "duplicate-paths": "duplicate path",
    "reserved-name": "reserved",
    "absolute-path": "must be relative",
    "dot-dot-inside": "must not contain '..'",
    "unclean-path": "must be clean",
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
async def test_provider_garbage_is_refused_and_old_contents_kept(
    fenv: DriverEnv, namespace: str, case: str
) -> None:
    await fenv.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
    pod = await make_pod(fenv, namespace, "garbage")
    [good] = await fenv.kubelet.publish_pod(pod)
    assert good.ok, good.error
    # first publish of a fresh pod with the garbage SPC: refused, nothing mounted
    await fenv.api.create(SPC, spc_manifest("garbage", namespace, GARBAGE[case]), namespace)
    bad_pod = await make_pod(fenv, namespace, "garbage-first", spc="garbage")
    [bad] = await fenv.kubelet.publish_pod(bad_pod, post_events=False)
    TALLY.faults += 1
    assert bad.error is not None
    assert EXPECTED_RULE[case] in (bad.error.details() or ""), bad.error.details()
    assert mounter.mounts_under(bad.target.parent) == []
    # a refresh that turns into garbage keeps the old files
    await fenv.api.merge_patch(SPC, "pair", {"spec": {"parameters": {"objects": GARBAGE[case]}}}, namespace)
    [refresh] = await fenv.kubelet.republish_pod(pod)
    TALLY.faults += 1
    assert refresh.ok
    TALLY.check_volume(good.target, {"user": "alice", "password": "s3cret"})
    assert not await asyncio.to_thread(Path("/etc/evil").exists)
    await fenv.kubelet.unpublish_pod(pod)


async def test_zero_byte_files_are_written(fenv: DriverEnv, namespace: str) -> None:
    objects = objects_param({"objectName": "empty", "objectContent": ""}, {"objectName": "x"})
    await fenv.api.create(SPC, spc_manifest("zero", namespace, objects), namespace)
    pod = await make_pod(fenv, namespace, "zero", spc="zero")
    [res] = await fenv.kubelet.publish_pod(pod)
    assert res.ok, res.error
    assert (res.target / "empty").read_bytes() == b""
    await fenv.kubelet.unpublish_pod(pod)


async def test_provider_slower_than_the_deadline(cluster: Any, crds: None, namespace: str) -> None:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-deadline",
        node="sscsi-node-deadline",
        extra_args=("--provider-timeout=1s",),
    ) as env:
        await env.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
        pod = await make_pod(env, namespace, "slow")
        env.provider_control("/fault?mode=slow&seconds=4")
        try:
            [res] = await env.kubelet.publish_pod(pod, post_events=False)
        finally:
            env.provider_control("/fault?mode=none")
        TALLY.faults += 1
        assert res.error is not None
        assert "DeadlineExceeded" in (res.error.details() or ""), res.error.details()
        assert mounter.mounts_under(res.target.parent) == []
        [retry] = await env.kubelet.publish_pod(pod)
        assert retry.ok, retry.error
        TALLY.check_volume(retry.target, {"user": "alice", "password": "s3cret"})
        await env.kubelet.unpublish_pod(pod)


async def test_statefulset_pod_moving_nodes_takes_over_its_spcps(fenv: DriverEnv, namespace: str) -> None:
    """Same pod name on a new node: the SPCPS left by the old node is updated, not duplicated."""
    from sscsi_kube.resources import SPCPS

    await fenv.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
    name = f"web-0-{namespace}-pair"
    await fenv.api.create(
        SPCPS,
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {
                "name": name,
                "labels": {"internal.secrets-store.csi.k8s.io/node-name": "old-node"},
            },
            "status": {
                "podName": "web-0",
                "secretProviderClassName": "pair",
                "mounted": True,
                "targetPath": "/old",
            },
        },
        namespace,
    )
    pod = await make_pod(fenv, namespace, "web-0")
    [res] = await fenv.kubelet.publish_pod(pod)
    assert res.ok, res.error
    spcps = await fenv.api.get(SPCPS, name, namespace)
    assert spcps["metadata"]["labels"]["internal.secrets-store.csi.k8s.io/node-name"] == fenv.node
    assert spcps["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    assert spcps["status"]["targetPath"] == str(res.target)
    await fenv.kubelet.unpublish_pod(pod)


async def test_pod_deleted_while_publish_in_flight(fenv: DriverEnv, namespace: str) -> None:
    from harness.k8s import wait_for
    from sscsi_kube import ApiError
    from sscsi_kube.resources import POD, SPCPS

    await fenv.api.create(SPC, spc_manifest("pair", namespace, PAIR), namespace)
    pod = await make_pod(fenv, namespace, "doomed")
    fenv.provider_control("/fault?mode=slow&seconds=2")
    try:
        publish = asyncio.create_task(fenv.kubelet.publish_pod(pod, post_events=False))
        await asyncio.sleep(0.5)
        await fenv.api.request("DELETE", POD.path(namespace, "doomed"), params={"gracePeriodSeconds": 0})
        TALLY.faults += 1
        await publish  # may succeed or fail; either way kubelet then unpublishes
    finally:
        fenv.provider_control("/fault?mode=none")
    [gone] = await fenv.kubelet.unpublish_pod(pod)
    assert gone.ok, gone.error
    assert mounter.mounts_under(gone.target.parent) == []

    async def no_spcps() -> bool:
        try:
            await fenv.api.get(SPCPS, f"doomed-{namespace}-pair", namespace)
            return False
        except ApiError as err:
            return err.not_found

    await wait_for(no_spcps, timeout=90)  # owned by the deleted pod: garbage-collected
