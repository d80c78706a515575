"""Scenario 1: the catalog, served from its image by a catalog pod, is browsable."""

from __future__ import annotations

from node.nodekit import wait_for
from olmkit import CATALOG, OLM_NS, PACKAGE, Live, catalog_ready, catalog_source


def test_catalog_source_ready_and_package_listed(live: Live) -> None:
    kube = live.kube
    kube.apply(catalog_source(live.images["catalog"]))
    wait_for("CatalogSource READY", lambda: catalog_ready(kube), 300, interval=2)
    # OLM runs `opm serve` from the catalog image in a pod of its own (spec.image, not spec.address).
    pods = kube.pods(OLM_NS, f"olm.catalogSource={CATALOG}")
    assert pods and pods[0]["spec"]["containers"][0]["image"] == live.images["catalog"]

    manifest = wait_for(
        "the packagemanifest", lambda: kube.get("packagemanifest", PACKAGE, OLM_NS), 120, interval=2
    )
    status = manifest["status"]
    assert status["catalogSource"] == CATALOG
    assert status["packageName"] == PACKAGE
    assert status["defaultChannel"] == "stable"
    channels = {c["name"]: c for c in status["channels"]}
    assert {"stable", "candidate"} <= set(channels)
    head = channels["stable"]["currentCSV"]
    assert head.startswith(f"{PACKAGE}.v")
    listed = kube.run("get", "packagemanifests", "-n", OLM_NS, "-o", "name")
    assert f"packagemanifest.packages.operators.coreos.com/{PACKAGE}" in listed.split()
