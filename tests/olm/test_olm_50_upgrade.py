"""Scenario 4: upgrade to the next release through the catalog.

The catalog gains version N+1 (`replaces` N, skipRange '>=0.0.0 <N+1'), made by hack/bundle.py.
OLM moves the Automatic Subscription to it; the operator and the driver DaemonSet roll. Meanwhile a
reader execs `cat` in the running application pod twice a second: the file must stay readable the
whole time, rotate after the upgrade, no tmpfs may leak, and a new pod mounts with the new driver.
The store is changed the moment the new catalog is published: the time until the running container
sees the new value is the staleness across the upgrade (printed, and kept in the logs directory).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from node.nodekit import Kube, wait_for
from olmkit import (
    CATALOG,
    DRIVER_DS,
    LOGS_DIR,
    NAMESPACE,
    OLM_NS,
    OPERATOR_DEPLOYMENT,
    App,
    Live,
    catalog_ready,
    daemonset_ready,
    deployment_available,
    installed_csv,
    project_version,
    rendered_objects,
    sigkill_container,
    wait_csv_succeeded,
)
from upgrade import Reader, next_release, next_version

OPERATOR_PODS = f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}"


def _new_operator_running(kube: Kube, version: str) -> bool:
    for pod in kube.pods(NAMESPACE, OPERATOR_PODS):
        if not pod["spec"]["containers"][0]["image"].endswith(f":v{version}"):
            continue
        if any((cs.get("state") or {}).get("running") for cs in pod["status"].get("containerStatuses") or []):
            return True
    return False


def _images_of(kube: Live, kind: str, name: str) -> set[str]:
    spec = kube.kube.get(kind, name, NAMESPACE)["spec"]["template"]["spec"]
    return {c["image"] for c in spec["containers"]}


def test_upgrade_to_the_next_release(live: Live, app: App, tmp_path: Path) -> None:
    kube = live.kube
    version = project_version()
    new = next_version(version)
    old_csv = installed_csv(kube)
    assert old_csv == f"secrets-store-csi-py.v{version}", "scenario 2 installs the current release first"
    assert daemonset_ready(kube)
    pod_uid = kube.get("pod", app.name, app.namespace)["metadata"]["uid"]
    mounts_before = app.mounts()
    assert mounts_before, "the app's volume is mounted"
    objects_before = rendered_objects(kube)
    catalog = next_release(version, tmp_path / "next")
    app.rotate(True)
    wait_for("the file to show the store's current value", lambda: app.read() == "rotated", 120, interval=2)

    with Reader(app) as reader:
        time.sleep(2)
        changed_at = time.monotonic()
        app.rotate(False)
        kube.run(
            "patch",
            "catalogsource",
            CATALOG,
            "-n",
            OLM_NS,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"image": catalog}}),
        )
        new_csv = f"secrets-store-csi-py.v{new}"
        wait_for(
            "the Subscription to move to the next release",
            lambda: installed_csv(kube) == new_csv,
            600,
            interval=2,
        )
        # Scenario 6 (upgrade): the new operator is SIGKILLed as soon as it runs, mid-reconcile.
        wait_for("the new operator running", lambda: _new_operator_running(kube, new), 300, interval=0.5)
        sigkill_container(kube, OPERATOR_PODS)
        wait_csv_succeeded(kube, new_csv)
        wait_for(
            f"the old CSV {old_csv} to go",
            lambda: not kube.exists("csv", old_csv, NAMESPACE),
            300,
            interval=2,
        )
        wait_for(
            "the operator to roll to the new image",
            lambda: (
                any(f":v{new}" in i for i in _images_of(live, "deployment", OPERATOR_DEPLOYMENT))
                and deployment_available(kube, OPERATOR_DEPLOYMENT, NAMESPACE)
            ),
            300,
        )
        # A second change in the store while the driver's pod is replaced: how stale does the running
        # container's file get across the driver's own restart?
        wait_for(
            "the new operator to roll the driver DaemonSet",
            lambda: any(f"driver:v{new}" in i for i in _images_of(live, "daemonset", DRIVER_DS)),
            300,
            interval=0.5,
        )
        roll_at = time.monotonic()
        app.rotate(True)
        wait_for("the driver DaemonSet rolled and ready", lambda: daemonset_ready(kube), 300, interval=1)
        wait_for(
            "the file to rotate across the driver's restart",
            lambda: reader.first_time("rotated", roll_at),
            180,
            interval=1,
        )
        wait_for(
            "the file to rotate after the upgrade",
            lambda: reader.first_time("secret", changed_at),
            180,
            interval=1,
        )
        time.sleep(3)
    assert rendered_objects(kube) == objects_before, "exactly one of each rendered object after the upgrade"
    seen_at = reader.first_time("secret", changed_at)
    seen_after_roll = reader.first_time("rotated", roll_at)
    assert seen_at is not None and seen_after_roll is not None
    failures = reader.failures()
    ok = [t for t, v in reader.samples if v is not None]
    report = {
        "from": old_csv,
        "to": new_csv,
        "reads": len(reader.samples),
        "failed_reads": len(failures),
        "longest_gap_between_good_reads_seconds": round(max(b - a for a, b in itertools.pairwise(ok)), 1),
        "staleness_store_change_at_upgrade_start_seconds": round(seen_at - changed_at, 1),
        "staleness_store_change_at_driver_roll_seconds": round(seen_after_roll - roll_at, 1),
        "rotation_interval_seconds": 5,
    }
    LOGS_DIR.mkdir(parents=True, exist_ok=True)
    (LOGS_DIR / "olm-upgrade.json").write_text(json.dumps(report, indent=2))
    print(f"\nupgrade: {report}")
    assert not failures, f"the file was unreadable {len(failures)} times during the upgrade"
    assert kube.get("pod", app.name, app.namespace)["metadata"]["uid"] == pod_uid, (
        "the app pod was not restarted"
    )
    assert sorted(app.mounts()) == sorted(mounts_before), "tmpfs mounts leaked or vanished"
    assert catalog_ready(kube)

    # A new pod mounts through the new driver.
    fresh = App(kube, name="app-after-upgrade")
    fresh.start(live.images["busybox"])
    try:
        assert fresh.read() == "secret"
    finally:
        kube.delete("pod", fresh.name, fresh.namespace)


@pytest.fixture(autouse=True)
def _installed(live: Live) -> None:
    if not installed_csv(live.kube):
        pytest.skip("needs the installation of scenario 2")
