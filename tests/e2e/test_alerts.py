"""The operator's alerts evaluated (promtool test rules) on metrics scraped from the real driver.

The driver and the reference provider run under the kubelet emulator (the T1 harness). A healthy phase
and a failing phase are scraped once per step; step i is minute i of promtool's timeline, with the
labels a ServiceMonitor target adds (tests/unit/bundle/alerts_rules.py). Healthy: nothing fires. Failing
(provider error code, provider not installed, refreshes failing, a Secret refused, the driver killed):
each driver alert fires with the expected labels and annotations (docs/alerts.md)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness.env import DriverEnv, csi_volume, driver_env, objects_param, pod_manifest, spc_manifest
from harness.k8s import create_pod, wait_for
from prometheus_client.parser import text_string_to_metric_families
from sscsi_kube.resources import SECRET, SPC
from unit.bundle.alerts_rules import NAMESPACE, TARGET, Scrapes, expected_alert, promtool_test

FOO = objects_param({"objectName": "foo", "objectVersion": "v1"})
INTERVAL = 1.0
STEPS = 22  # minutes of promtool timeline per phase: longer than every `for:` + window
DOWN_STEPS = 8
FAULT = "/fault?mode=error-code&code=VaultDenied"
DRIVER_ALERTS = (
    "SecretsStoreCSIMountFailures",
    "SecretsStoreCSIRotationFailures",
    "SecretsStoreCSIProviderMissing",
    "SecretsStoreCSIDriverDown",
    "SecretsStoreCSISyncRefused",
)


@pytest.fixture(scope="module")
async def env(cluster: Any, crds: None) -> AsyncIterator[DriverEnv]:
    async with driver_env(
        cluster.kubeconfig,
        cluster.logs_dir / "driver-alerts",
        node="sscsi-node-alerts",
        rotation=True,
        rotation_interval=f"{INTERVAL:g}s",
    ) as e:
        yield e
        if e.driver.alive():
            e.provider_control("/fault?mode=none")


def scrape(env: DriverEnv) -> str | None:
    try:
        return env.metrics()
    except OSError:
        return None


def labels_of(text: str, name: str) -> list[dict[str, str]]:
    return [dict(s.labels) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


async def publish(env: DriverEnv, namespace: str, name: str, spc: str) -> tuple[dict[str, Any], bool]:
    pod = await create_pod(env.api, pod_manifest(name, namespace, env.node, [csi_volume("v", spc)]))
    [result] = await env.kubelet.publish_pod(pod)
    return pod, result.ok


async def healthy_phase(env: DriverEnv, namespace: str, steady: dict[str, Any]) -> Scrapes:
    scrapes = Scrapes()
    for i in range(STEPS):
        pod, ok = await publish(env, namespace, f"healthy-{i}", "ok")
        assert ok
        await asyncio.sleep(INTERVAL + 0.1)
        [refresh] = await env.kubelet.republish_pod(steady)  # a refresh that works
        assert refresh.ok, refresh.error
        await env.kubelet.unpublish_pod(pod)
        scrapes.record(scrape(env))
    return scrapes


async def failing_phase(env: DriverEnv, namespace: str, steady: dict[str, Any]) -> Scrapes:
    scrapes = Scrapes()
    for i in range(STEPS):
        env.provider_control(FAULT)
        try:
            await asyncio.sleep(INTERVAL + 0.1)
            [refresh] = await env.kubelet.republish_pod(steady)  # fails; answered ok, as upstream
            assert refresh.ok
            _, ok = await publish(env, namespace, f"fault-{i}", "ok")
            assert not ok
        finally:
            env.provider_control("/fault?mode=none")
        _, ok = await publish(env, namespace, f"gone-{i}", "gone")
        assert not ok
        scrapes.record(scrape(env))
    env.driver.kill()
    for _ in range(DOWN_STEPS):
        scrapes.record(scrape(env))
    return scrapes


async def refuse_a_secret(env: DriverEnv, namespace: str) -> None:
    """A Secret the driver did not create, named by a SecretProviderClass: not synced, counted."""
    foreign = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "foreign"},
        "data": {"k": base64.b64encode(b"x").decode()},
    }
    await env.api.create(SECRET, foreign, namespace)
    objects = [{"secretName": "foreign", "type": "Opaque", "data": [{"objectName": "foo", "key": "k"}]}]
    await env.api.create(SPC, spc_manifest("grab", namespace, FOO, secretObjects=objects), namespace)
    _, ok = await publish(env, namespace, "grabber", "grab")
    assert ok

    async def counted() -> bool:
        return any(
            lab.get("secret") == "foreign"
            for lab in labels_of(env.metrics(), "sync_k8s_secret_refused")
            if lab.get("namespace") == namespace
        )

    await wait_for(counted, timeout=20)


async def test_alerts_quiet_when_healthy_fire_when_failing(
    env: DriverEnv, namespace: str, tmp_path: Path
) -> None:
    await env.api.create(SPC, spc_manifest("ok", namespace, FOO), namespace)
    await env.api.create(SPC, spc_manifest("gone", namespace, FOO, provider="not-installed"), namespace)
    steady, ok = await publish(env, namespace, "steady", "ok")
    assert ok

    healthy = await healthy_phase(env, namespace, steady)
    quiet = [
        {"eval_time": f"{m}m", "alertname": name, "exp_alerts": []}
        for name in DRIVER_ALERTS
        for m in (6, 12, STEPS - 1)
    ]
    (tmp_path / "healthy").mkdir()
    out = promtool_test(tmp_path / "healthy", healthy.input_series(), quiet)
    assert out.returncode == 0, out.stdout + out.stderr

    await refuse_a_secret(env, namespace)
    failing = await failing_phase(env, namespace, steady)
    text = failing_text(failing)
    mount_types = {lab["error_type"] for lab in labels_of(text, "node_publish_error_total")} - {""}
    [rotation_type] = {lab["error_type"] for lab in labels_of(text, "rotation_reconcile_error_total")}
    assert mount_types == {"VaultDenied"}
    where = {"namespace": NAMESPACE, "pod": TARGET["pod"]}
    refused = {
        "exported_namespace": namespace,
        "secret": "foreign",
        "secret_provider_class": "grab",
        "reason": "unmanaged",
    }
    at = f"{STEPS - 1}m"
    fired = [
        {"eval_time": at, "alertname": "SecretsStoreCSIDriverDown", "exp_alerts": []},
        alert(at, "SecretsStoreCSIMountFailures", {**where, "error_type": "VaultDenied"}),
        alert(at, "SecretsStoreCSIRotationFailures", {**where, "error_type": rotation_type}),
        alert(at, "SecretsStoreCSIProviderMissing", where),
        alert(at, "SecretsStoreCSISyncRefused", refused),
        alert(f"{STEPS + DOWN_STEPS - 1}m", "SecretsStoreCSIDriverDown", dict(TARGET)),
    ]
    (tmp_path / "failing").mkdir()
    out = promtool_test(tmp_path / "failing", failing.input_series(), fired)
    assert out.returncode == 0, out.stdout + out.stderr


def failing_text(scrapes: Scrapes) -> str:
    """The series names of the failing phase, as exposition lines (for their labels)."""
    return "".join(f"{name} 1\n" for name in scrapes.values)


def alert(at: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": [expected_alert(name, labels)]}
