"""doctor's verdicts on the recorded healthy world, and on each link broken the way a cluster breaks it."""

from __future__ import annotations

from typing import Any

from .conftest import World
from .world import event

VOL = "secrets-store-inline"
SPC_LINK = f"{VOL}: SecretProviderClass"
PROVIDER_LINK = f"{VOL}: provider on the node"
MOUNT_LINK = f"{VOL}: mount (SecretProviderClassPodStatus)"
EVENTS_LINK = f"{VOL}: events"
SYNC_LINK = f"{VOL}: synced Secrets"
LATER = "2099-01-01T00:00:00Z"


def _not_started(pod: dict[str, Any]) -> None:
    """As kubelet leaves a pod whose volume cannot be mounted: ContainerCreating."""
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    pod["status"]["containerStatuses"] = [
        {
            "name": "busybox",
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }
    ]


def _unmounted(world: World, message: str) -> None:
    world.cluster.remove("SecretProviderClassPodStatus")
    _not_started(world.pod)
    world.cluster.add(
        event(world.pod, "FailedMount", f'MountVolume.SetUp failed for volume "{VOL}" : {message}', LATER)
    )


def test_healthy_every_link_ok(world: World) -> None:
    code, links = world.links()
    assert code == 0
    assert {name: link["verdict"] for name, link in links.items()} == dict.fromkeys(links, "ok")
    assert set(links) == {
        "ClusterCSIDriver",
        "CSIDriver",
        "driver on the node",
        "CSINode registration",
        SPC_LINK,
        PROVIDER_LINK,
        MOUNT_LINK,
        EVENTS_LINK,
        SYNC_LINK,
    }
    assert "e2e-provider.sock" in links[PROVIDER_LINK]["evidence"][0]
    assert any("foo@v1" in e for e in links[MOUNT_LINK]["evidence"])
    assert world.about["secret"] in links[SYNC_LINK]["evidence"][0]
    # the driver makes the volume's SPCPS (owned by the pod) the Secret's owner
    assert "owners: SecretProviderClassPodStatus/healthy-" in links[SYNC_LINK]["evidence"][0]


def test_missing_spc(world: World) -> None:
    world.cluster.remove("SecretProviderClass")
    _unmounted(world, f"failed to get secretproviderclass {world.about['namespace']}/x, error: not found")
    code, links = world.links()
    assert code == 1
    assert links[SPC_LINK]["reason"] == "SecretProviderClassNotFound"
    assert world.about["spc"] in links[SPC_LINK]["evidence"][0]
    assert links[PROVIDER_LINK]["verdict"] == "skipped"
    assert links[MOUNT_LINK]["reason"] == "NotMounted"
    assert links[EVENTS_LINK]["reason"] == "MountFailing"
    assert links["driver on the node"]["verdict"] == "ok"


def test_wrong_provider_name(world: World) -> None:
    world.cluster.find("SecretProviderClass")["spec"]["provider"] = "e2e-provder"
    _unmounted(
        world, 'error connecting to provider "e2e-provder": provider not found: provider "e2e-provder"'
    )
    code, links = world.links()
    assert code == 1
    link = links[PROVIDER_LINK]
    assert link["reason"] == "ProviderNotFound"
    assert "no pod on node" in link["evidence"][0] and "e2e-provider" in link["evidence"][0]
    assert "provider not found" in link["evidence"][1]
    assert "secrets-store-csi-driver-node" not in link["evidence"][0], "the driver is no provider"
    assert "e2e-provider" in link["fix"]


def test_provider_not_running(world: World) -> None:
    provider = world.cluster.find("Pod", None, app="csi-secrets-store-e2e-provider")
    provider["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    provider["status"]["containerStatuses"][0].update(
        ready=False, state={"waiting": {"reason": "CrashLoopBackOff"}}, restartCount=5
    )
    code, links = world.links()
    assert code == 1
    link = links[PROVIDER_LINK]
    assert link["reason"] == "ProviderNotReady"
    assert "waiting (CrashLoopBackOff), 5 restarts" in link["evidence"][0]


def test_provider_outside_kubernetes_is_judged_by_the_mount(world: World) -> None:
    world.cluster.remove("Pod", None, app="csi-secrets-store-e2e-provider")
    code, links = world.links()
    assert code == 0
    assert "outside Kubernetes" in links[PROVIDER_LINK]["evidence"][0]


def test_driver_not_on_the_node(world: World) -> None:
    world.cluster.remove("Pod", None, app="secrets-store-csi-driver-node")
    ds = world.cluster.find("DaemonSet")
    ds["spec"]["template"]["spec"]["nodeSelector"]["sscsi-doctor"] = "elsewhere"
    code, links = world.links()
    assert code == 1
    link = links["driver on the node"]
    assert link["reason"] == "DriverNotOnNode"
    assert any("sscsi-doctor=elsewhere" in e for e in link["evidence"])
    assert "nodePlacement" in link["fix"]


def test_driver_not_ready(world: World) -> None:
    driver = world.cluster.find("Pod", None, app="secrets-store-csi-driver-node")
    driver["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    driver["status"]["containerStatuses"][0].update(
        ready=False, state={"waiting": {"reason": "CrashLoopBackOff"}}
    )
    code, links = world.links()
    assert code == 1
    assert links["driver on the node"]["reason"] == "DriverNotReady"
    assert "CrashLoopBackOff" in links["driver on the node"]["evidence"][0]


def test_driver_not_registered(world: World) -> None:
    world.cluster.find("CSINode")["spec"]["drivers"] = []
    code, links = world.links()
    assert code == 1
    assert links["CSINode registration"]["reason"] == "DriverNotRegistered"
    fix = links["CSINode registration"]["fix"]
    assert "-c csi-driver" in fix
    assert "registered with kubelet" in fix and "kubelet refused the registration" in fix


def test_cr_removed(world: World) -> None:
    world.cluster.find("ClusterCSIDriver")["spec"]["managementState"] = "Removed"
    world.cluster.remove("CSIDriver")
    world.cluster.remove("Pod", None, app="secrets-store-csi-driver-node")
    world.cluster.remove("DaemonSet")
    code, links = world.links()
    assert code == 1
    assert links["ClusterCSIDriver"]["reason"] == "ManagementStateRemoved"
    assert links["CSIDriver"]["reason"] == "CSIDriverMissing"
    assert '"managementState":"Managed"' in links["CSIDriver"]["fix"]
    assert any("Removed" in e for e in links["driver on the node"]["evidence"])


def test_operator_degraded(world: World) -> None:
    cr = world.cluster.find("ClusterCSIDriver")
    for cond in cr["status"]["conditions"]:
        if cond["type"] == "Degraded":
            cond.update(status="True", reason="ApplyFailed", message="apply DaemonSet: forbidden")
    code, links = world.links()
    assert code == 1
    assert links["ClusterCSIDriver"]["reason"] == "OperatorDegraded"
    assert any("apply DaemonSet: forbidden" in e for e in links["ClusterCSIDriver"]["evidence"])


def test_csidriver_misshaped(world: World) -> None:
    world.cluster.find("CSIDriver")["spec"]["podInfoOnMount"] = False
    code, links = world.links()
    assert code == 1
    assert links["CSIDriver"]["reason"] == "CSIDriverMisshaped"


def test_invalid_spc(world: World) -> None:
    world.cluster.find("SecretProviderClass")["spec"]["secretObjects"][0]["data"] = [{"objectName": "foo"}]
    code, links = world.links()
    assert code == 1
    assert links[SPC_LINK]["reason"] == "SecretProviderClassInvalid"
    assert "needs objectName and key" in links[SPC_LINK]["evidence"][0]


def test_refresh_failing_after_start(world: World) -> None:
    spc = world.about["spc"]
    world.cluster.add(
        event(world.pod, "MountRotationFailed", f"failed to rotate {spc}: provider error", LATER)
    )
    code, links = world.links()
    assert code == 1
    assert links[EVENTS_LINK]["reason"] == "RefreshFailing"


def test_failures_before_the_pod_started_are_history(world: World) -> None:
    message = f'MountVolume.SetUp failed for volume "{VOL}" : provider not ready'
    world.cluster.add(event(world.pod, "FailedMount", message, "2000-01-01T00:00:00Z"))
    code, links = world.links()
    assert code == 0
    assert links[EVENTS_LINK]["reason"] == "Recovered"


def test_secret_not_the_drivers(world: World) -> None:
    secret = world.cluster.find("Secret", world.about["secret"])
    secret["metadata"]["labels"].pop("secrets-store.csi.k8s.io/managed")
    code, links = world.links()
    assert code == 1
    assert "not the driver's" in links[SYNC_LINK]["evidence"][0]
    assert "kubectl label secret" in links[SYNC_LINK]["fix"]


def test_sync_disabled(world: World) -> None:
    world.cluster.remove("Secret", world.about["secret"])
    driver = world.cluster.find("Pod", None, app="secrets-store-csi-driver-node")
    args = driver["spec"]["containers"][0]["args"]
    driver["spec"]["containers"][0]["args"] = [
        "--enable-secret-sync=false" if a.startswith("--enable-secret-sync") else a for a in args
    ]
    code, links = world.links()
    assert code == 1
    assert "syncSecret" in links[SYNC_LINK]["fix"]


def test_namespace_user_gets_could_not_check(world: World) -> None:
    """Namespace admin: cluster-scoped reads and the driver's namespace are forbidden."""
    driver_ns = "secrets-store-csi-driver"
    world.cluster.forbidden |= {
        ("get", "clustercsidrivers", None),
        ("get", "csidrivers", None),
        ("get", "csinodes", None),
        ("get", "nodes", None),
        ("list", "pods", driver_ns),
        ("get", "daemonsets", driver_ns),
        ("list", "pods", ""),
    }
    code, links = world.links()
    assert code == 3
    for name in ("ClusterCSIDriver", "CSIDriver", "driver on the node", "CSINode registration"):
        assert links[name]["verdict"] == "unknown", links[name]
        assert links[name]["evidence"][0].startswith("could not check: RBAC forbids "), links[name]
    assert "csinodes.storage.k8s.io" in links["CSINode registration"]["evidence"][0]
    for name in (SPC_LINK, PROVIDER_LINK, MOUNT_LINK, EVENTS_LINK, SYNC_LINK):
        assert links[name]["verdict"] == "ok", links[name]


def test_broken_wins_over_unknown(world: World) -> None:
    world.cluster.forbidden.add(("get", "csinodes", None))
    world.cluster.remove("SecretProviderClass")
    code, links = world.links()
    assert code == 1
    assert links["CSINode registration"]["verdict"] == "unknown"


def test_secret_values_never_printed(world: World) -> None:
    secret = world.cluster.find("Secret", world.about["secret"])
    secret["data"] = dict.fromkeys(secret["data"], "c3VwZXItc2VjcmV0LXZhbHVl")
    for argv in (("-o", "json"), ("-o", "text")):
        _, out = world.cli("doctor", world.about["pod"], "-n", world.about["namespace"], *argv)
        assert "c3VwZXItc2VjcmV0LXZhbHVl" not in out and "super-secret-value" not in out


def test_pod_not_found_and_pod_without_volumes(world: World) -> None:
    code, message = world.cli("doctor", "nope", "-n", world.about["namespace"])
    assert code == 2 and "not found" in message
    world.pod["spec"]["volumes"] = []
    code, message = world.cli("doctor", world.about["pod"], "-n", world.about["namespace"])
    assert code == 2 and "no volume of driver" in message


def test_text_output(world: World) -> None:
    world.cluster.remove("SecretProviderClass")
    code, out = world.cli("doctor", world.about["pod"], "-n", world.about["namespace"])
    assert code == 1
    assert out.startswith(f"pod {world.about['namespace']}/{world.about['pod']}: BROKEN (exit 1)")
    assert "[BROKEN]   SecretProviderClass (SecretProviderClassNotFound)" in out
    assert "fix: create SecretProviderClass" in out
