"""Each chaos fault (tests/chaos/faults*.py) on the real node: probed, injected, seen to act, healed
(twice: heal is idempotent), and the node back to where a new pod reads its stamped secret.

Opt-in (about 5 minutes: restarts and rollouts are waited out one by one): SSCSI_NODE_CHAOS_FAULTS=1
pytest tests/node/test_node_chaos_faults.py. A fault this machine cannot produce is skipped with its
probe's reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator

import pytest
from chaos.faults import KINDS, ChaosNode, Fault, FaultError, node_faults
from nodekit import app_pod_spec, spc, wait_for, wait_pod_ready
from nodesetup import DRIVER_APP, OPERATOR_NAMESPACE, Installation, driver_installed
from sscsi_operator.spec import LogLevel
from sscsi_provider.stamp import stamp_line

pytestmark = pytest.mark.skipif(
    os.environ.get("SSCSI_NODE_CHAOS_FAULTS") != "1", reason="opt-in: SSCSI_NODE_CHAOS_FAULTS=1"
)

SALT = "chaos-faults-test"
PERIOD = 5
MOUNT = "/mnt/secrets-store"
HOLD = 3.0
LINE = re.compile(r"^(?P<ns>[^/]+)/(?P<pod>[^/]+)/foo v(?P<v>\d+) [0-9a-f]{32}\n$")


@pytest.fixture
def faults(chaos_node: ChaosNode) -> Iterator[dict[str, Fault]]:
    by_kind = {f.kind: f for f in node_faults(chaos_node)}
    yield by_kind
    for fault in by_kind.values():  # a failed test leaves nothing injected
        with contextlib.suppress(FaultError):
            fault.heal()


def stamped_pod(installation: Installation, ns: str, name: str) -> None:
    doc = spc("chaos-stamp", objects=("foo",))
    doc["spec"]["parameters"].update({"stampPeriodSeconds": str(PERIOD), "stampSalt": SALT})
    installation.kube.apply(doc, ns)
    pod_spec = app_pod_spec([("secrets", "chaos-stamp", MOUNT)])
    installation.kube.apply(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}, ns
    )


def assert_reads_stamp(installation: Installation, ns: str, name: str) -> None:
    wait_pod_ready(installation.kube, name, ns, timeout=180)
    text = installation.kube.exec(name, ns, "cat", f"{MOUNT}/foo")
    match = LINE.match(text)
    assert match and (match["ns"], match["pod"]) == (ns, name), text
    version = int(match["v"])
    assert text.encode() == stamp_line(SALT, ns, name, "foo", version)
    assert abs(version - time.time() // PERIOD) <= 60 // PERIOD + 1


def serving(chaos_node: ChaosNode, component: str) -> bool:
    try:
        chaos_node.node_component("status", component, 30)
    except FaultError:
        return False
    return True


def provider_answers(chaos_node: ChaosNode) -> bool:
    try:
        return "fault" in chaos_node.provider_control("/state")
    except FaultError:
        return False


def recovered(installation: Installation, chaos_node: ChaosNode, ns: str, name: str) -> None:
    """The driver Ready and registered, every component serving, a new pod reading its secret."""
    for component in ("etcd", "kube-apiserver", "containerd", "kubelet"):
        wait_for(f"{component} serving", lambda c=component: serving(chaos_node, c), 120)
    wait_for("the driver installed and registered", lambda: driver_installed(installation.kube), 240)
    wait_for("the provider's control endpoint", lambda: provider_answers(chaos_node), 60)
    stamped_pod(installation, ns, name)
    assert_reads_stamp(installation, ns, name)


def acted(kind: str, fault: Fault, chaos_node: ChaosNode, installation: Installation, ns: str) -> None:
    """What shows that the fault took effect."""
    if kind.endswith("-kill"):
        workload = {
            "driver-kill": chaos_node.driver,
            "provider-kill": chaos_node.provider,
            "operator-kill": chaos_node.operator,
        }[kind]
        killed = fault.killed[-1]  # type: ignore[attr-defined]
        wait_for(
            f"kubelet to restart {workload.container}",
            lambda: any(c.id != killed for c in chaos_node.containers(workload)),
            120,
        )
    elif kind.startswith("provider-"):
        mode = {"provider-hang": "hang", "provider-slow": "slow", "provider-garbage": "garbage"}[kind]
        assert f'"mode": "{mode}"' in chaos_node.provider_control("/state")
        stamped_pod(installation, ns, "during")
        if mode == "hang":
            wait_for(
                "a Mount held by the hang",
                lambda: '"hung_mounts": 0' not in chaos_node.provider_control("/state"),
            )
        elif mode == "garbage":
            wait_for(
                "FailedMount for the garbage answer", lambda: "FailedMount" in warnings(installation, ns)
            )
    elif kind.endswith("-restart"):
        component = kind.removesuffix("-restart").replace("apiserver", "kube-apiserver")
        assert not serving(chaos_node, component)
    elif kind == "ccd-edit-rollout":
        level = installation.kube.get("clustercsidriver", chaos_node.cluster_csi_driver)["spec"]["logLevel"]
        assert level != fault._original  # type: ignore[attr-defined]
        flag = f"-v={LogLevel(level).verbosity}"
        wait_for(
            f"the operator to render {flag} into the DaemonSet", lambda: flag in driver_args(installation), 60
        )
    elif kind == "driver-memory-pressure":
        [(limit, original)] = fault._saved.items()  # type: ignore[attr-defined]
        assert int(limit.read_text()) < int(original)


def driver_args(installation: Installation) -> list[str]:
    ds = installation.kube.get("daemonset", DRIVER_APP, OPERATOR_NAMESPACE)
    containers = ds["spec"]["template"]["spec"]["containers"]
    return [arg for c in containers if c["name"] == "csi-driver" for arg in c.get("args", [])]


def warnings(installation: Installation, ns: str) -> str:
    return " ".join(e["reason"] for e in installation.kube.events(ns) if e.get("type") == "Warning")


@pytest.mark.parametrize("kind", KINDS)
def test_fault_acts_and_node_recovers(
    kind: str, installation: Installation, chaos_node: ChaosNode, faults: dict[str, Fault], ns: str
) -> None:
    fault = faults[kind]
    reason = fault.probe()
    if reason is not None:
        pytest.skip(f"{kind}: {reason}")
    started = time.monotonic()
    fault.inject()
    assert time.monotonic() - started < 20, "inject returns within seconds"
    acted(kind, fault, chaos_node, installation, ns)
    time.sleep(HOLD)
    fault.heal()
    fault.heal()
    recovered(installation, chaos_node, ns, "after")
    if kind in ("provider-hang", "provider-garbage", "provider-slow"):
        assert_reads_stamp(installation, ns, "during")
