#!/usr/bin/env python3
"""`make demo`: the product as a user meets it, on this machine.

Builds what is missing (Kubernetes, OLM, the registry, CoreDNS, opm: minutes on a cold machine),
brings up the control plane, a real node (containerd + kubelet), the loopback registry and OLM,
installs the operator from its catalog, creates the ClusterCSIDriver, starts an application pod,
prints the secret as the container reads it, rotates it in the store and prints the new value.
Everything is left running so you can look around (the last lines say how).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# The real-node and OLM test kits (tests/ is on PYTHONPATH: `make demo`).
from node.nodekit import CLUSTER_DIR, KUBE_BIN, Kube
from olm.olmkit import (
    CATALOG,
    CR_NAME,
    NAMESPACE,
    OPERATOR_DEPLOYMENT,
    PROVIDER_APP,
    PROVIDER_NS,
    REGISTRY,
    App,
    catalog_ready,
    catalog_source,
    cluster_csi_driver,
    csinode_has_driver,
    daemonset_ready,
    deployment_available,
    installed_csv,
    namespace_and_group,
    provider_daemonset,
    subscription,
)

ROOT = Path(__file__).resolve().parent.parent
# The hack/*.sh this demo runs use the same node cluster directory as the kit.
os.environ.setdefault("SSCSI_NODE_CLUSTER_DIR", str(CLUSTER_DIR))
HACK = ROOT / "hack"
IMAGES = ("driver", "operator", "provider", "livenessprobe", "busybox", "bundle", "catalog")
START = time.monotonic()
T = TypeVar("T")


def say(msg: str) -> None:
    print(f"[demo {time.monotonic() - START:6.0f}s] {msg}", flush=True)


def step(what: str, cmd: list[str], note: str = "", env: dict[str, str] | None = None) -> str:
    """Run a long step; a progress line every 30 s, its log only on failure."""
    say(f"{what}{' (' + note + ')' if note else ''} ...")
    t0 = time.monotonic()
    done = threading.Event()

    def ticker() -> None:
        while not done.wait(30):
            say(f"  ... still {what.lower()} ({time.monotonic() - t0:.0f}s)")

    threading.Thread(target=ticker, daemon=True).start()
    try:
        r = subprocess.run(
            cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
        )
    finally:
        done.set()
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        say(f"FAILED: {' '.join(cmd)}")
        sys.exit(1)
    say(f"{what}: done in {time.monotonic() - t0:.0f}s")
    return r.stdout


def until(what: str, fn: Callable[[], T | None], timeout: float = 300) -> T:
    t0 = time.monotonic()
    last_note = t0
    while True:
        try:
            value = fn()
        except AssertionError:
            value = None
        if value:
            say(f"{what}: after {time.monotonic() - t0:.0f}s")
            return value
        if time.monotonic() - t0 > timeout:
            say(f"FAILED: {what} within {timeout:.0f}s")
            sys.exit(1)
        if time.monotonic() - last_note > 30:
            say(f"  ... waiting for {what} ({time.monotonic() - t0:.0f}s)")
            last_note = time.monotonic()
        time.sleep(2)


def main() -> None:
    say("secrets-store-csi-py: install the operator from its OLM catalog on a real node")
    step(
        "Building tools",
        [str(HACK / "build-tools.sh"), "kube", "node", "live", "olm"],
        "Kubernetes, OLM, registry, CoreDNS, opm from Go modules: ~30 min cold on 2 cores, 0 cached",
    )
    kubeconfig = step(
        "Starting the node",
        [str(HACK / "node-up.sh")],
        "containerd, control plane, kubelet, registry, kube-proxy, CoreDNS",
    ).split()[-1]
    kube = Kube(Path(kubeconfig))
    step("Installing OLM", [str(HACK / "olm-up.sh")], "olm-operator, catalog-operator, package-server")
    images = json.loads(
        step(
            "Building and pushing the images",
            [str(HACK / "images.sh"), "push", *IMAGES],
            "operator, driver, provider, sidecars, bundle, catalog: a few minutes the first time",
            env={"SSCSI_REGISTRY": REGISTRY},
        )
    )

    kube.apply(catalog_source(images["catalog"]))
    until("CatalogSource READY", lambda: catalog_ready(kube, CATALOG))
    print(kube.run("get", "packagemanifests", "-n", "olm"), flush=True)
    kube.apply(namespace_and_group())
    kube.apply(subscription())
    csv = until("the Subscription's InstallPlan", lambda: installed_csv(kube))
    until(
        f"CSV {csv} Succeeded",
        lambda: kube.get("csv", csv, NAMESPACE).get("status", {}).get("phase") == "Succeeded",
    )
    until("the operator running", lambda: deployment_available(kube, OPERATOR_DEPLOYMENT, NAMESPACE))

    kube.apply(provider_daemonset(images["provider"]))
    kube.run(
        "rollout", "status", "-n", PROVIDER_NS, f"daemonset/{PROVIDER_APP}", "--timeout=180s", timeout=200
    )
    kube.apply(cluster_csi_driver())
    until("the driver DaemonSet ready", lambda: daemonset_ready(kube))
    node = kube.get("nodes")["items"][0]["metadata"]["name"]
    until("kubelet registering the driver", lambda: csinode_has_driver(kube, node))

    app = App(kube, name="demo-app", namespace="demo")
    app.rotate(False)
    if not kube.exists("pod", app.name, app.namespace):
        app.start(images["busybox"])
    cat = f"kubectl -n {app.namespace} exec {app.name} -- cat /mnt/secrets-store/foo"
    say(f"$ {cat}")
    print(f"    {app.read()}", flush=True)
    say("rotating the secret in the store (reference provider: /rotation?rotated=true) ...")
    app.rotate(True)
    until("the new value in the running container", lambda: app.read() == "rotated", 180)
    say(f"$ {cat}")
    print(f"    {app.read()}", flush=True)

    print(
        f"""
Look around (everything keeps running):
  export KUBECONFIG={kubeconfig}
  export PATH={KUBE_BIN}:$PATH
  kubectl get csv,subscription,installplan -n {NAMESPACE}
  kubectl get clustercsidriver {CR_NAME} -o yaml
  kubectl get pods -A -o wide
  {cat}
Stop it all: make node-down""",
        flush=True,
    )


if __name__ == "__main__":
    main()
