"""chaos.faults*: containers found from task bundles, the provider's shared fault slot, the memory
limit saved and restored, the disk filled and freed (on the node: tests/node/test_node_chaos_faults)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos import faults, faults_provider, faults_resources
from chaos.faults import KINDS, ChaosNode, Fault, FaultError, node_faults
from chaos.faults_host import Container, alive, cgroup_dir, running_containers
from chaos.faults_resources import DiskFull, DriverMemoryPressure, memory_limit_file
from node.nodekit import Kube


def ctx(**changes: object) -> ChaosNode:
    return ChaosNode(Kube(Path("/dev/null")), **changes)  # type: ignore[arg-type]


def bundle(tasks: Path, cid: str, pid: int, pod: str, name: str | None, kind: str = "container") -> None:
    d = tasks / cid
    d.mkdir(parents=True)
    annotations = {
        "io.kubernetes.cri.container-type": kind,
        "io.kubernetes.cri.sandbox-namespace": "kube-system",
        "io.kubernetes.cri.sandbox-name": pod,
    }
    if name:
        annotations["io.kubernetes.cri.container-name"] = name
    (d / "config.json").write_text(json.dumps({"annotations": annotations}))
    (d / "init.pid").write_text(f"{pid}\n")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_running_containers_from_task_bundles(tmp_path: Path) -> None:
    me = os.getpid()
    bundle(tmp_path, "a1", me, "csi-secrets-store-e2e-provider-x1", "provider")
    bundle(tmp_path, "b2", dead_pid(), "csi-secrets-store-e2e-provider-x1", "provider")  # exited
    bundle(tmp_path, "c3", me, "csi-secrets-store-e2e-provider-x1", None, kind="sandbox")
    bundle(tmp_path, "d4", me, "csi-secrets-store-upstream-e2e-provider-y2", "provider")
    (tmp_path / "e5").mkdir()  # a task being created: no files yet
    found = running_containers("kube-system", "csi-secrets-store-e2e-provider-", "provider", tmp_path)
    assert found == [Container("a1", me, "kube-system", "csi-secrets-store-e2e-provider-x1", "provider")]
    assert running_containers("kube-system", "x-", "provider", tmp_path / "missing") == []
    assert alive(me) and not alive(dead_pid())


def test_cgroup_dir_of_this_process_exists() -> None:
    found = cgroup_dir(os.getpid(), "memory")
    assert found is None or found.is_dir()


def test_node_faults_lists_every_kind_once() -> None:
    listed = node_faults(ctx())
    assert tuple(f.kind for f in listed) == KINDS
    assert all(f.max_seconds > 0 for f in listed)


class FakeProvider:
    """The provider container as the faults see it: `id` changes on a restart, None = not running."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[str] = []
        self.id: str | None = "p1"
        self.mode = "none"
        monkeypatch.setattr(faults_provider, "KEEP_INTERVAL", 0.05)
        monkeypatch.setattr(faults, "running_containers", lambda *a, **k: self.running())
        monkeypatch.setattr(faults_provider, "netns_get", self.get)

    def running(self) -> list[Container]:
        pod = "csi-secrets-store-e2e-provider-x1"
        return [Container(self.id, os.getpid(), "kube-system", pod, "provider")] if self.id else []

    def get(self, pid: int, url: str, timeout: float = 5.0) -> str:
        query = url.rsplit("mode=", 1)[1]
        self.asked.append(query)
        self.mode = query.split("&")[0]
        return f"fault set to {self.mode}\n"

    def restart(self, new_id: str | None) -> None:
        self.id, self.mode = new_id, "none"


def wait_until(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def provider_faults() -> tuple[Fault, Fault, Fault]:
    by_kind = {f.kind: f for f in node_faults(ctx())}
    return by_kind["provider-hang"], by_kind["provider-slow"], by_kind["provider-garbage"]


def test_provider_modes_share_one_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider(monkeypatch)
    hang, slow, garbage = provider_faults()
    hang.inject()
    slow.inject()
    garbage.inject()
    garbage.heal()  # the newest still active comes back
    hang.heal()
    hang.heal()
    assert provider.mode == "slow"
    slow.heal()
    assert provider.asked == ["hang", "slow&seconds=4", "garbage", "slow&seconds=4", "none"]


def test_provider_mode_held_across_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider(monkeypatch)
    hang, _, _ = provider_faults()
    provider.restart(None)  # kubelet's back-off keeps the provider down
    hang.inject()  # returns at once
    assert provider.asked == []
    provider.restart("p2")
    wait_until("the keeper to set hang on the new provider", lambda: provider.mode == "hang")
    provider.restart("p3")  # killed while the fault holds
    wait_until("hang set again", lambda: provider.mode == "hang")
    hang.heal()
    assert provider.mode == "none"
    provider.restart("p4")
    time.sleep(0.3)
    assert provider.asked == ["hang", "hang", "none"]  # nothing held once healed


def test_provider_answer_not_matching_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProvider(monkeypatch)
    monkeypatch.setattr(faults_provider, "netns_get", lambda pid, url, timeout=5.0: "unknown fault mode\n")
    with pytest.raises(FaultError, match="unknown fault mode"):
        {f.kind: f for f in node_faults(ctx())}["provider-garbage"].inject()


class FakeDriver:
    """Driver containers whose memory cgroups are directories under tmp_path."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str, usage: str) -> None:
        self.root, self.limit, self.usage = tmp_path, limit, usage
        self.id: str | None = None
        monkeypatch.setattr(faults_resources, "KEEP_INTERVAL", 0.05)
        monkeypatch.setattr(faults, "running_containers", lambda *a, **k: self.running())
        monkeypatch.setattr(faults_resources, "cgroup_dir", lambda pid, controller: self.root / str(self.id))

    def start(self, cid: str, original: str) -> Path:
        (self.root / cid).mkdir()
        (self.root / cid / self.limit).write_text(f"{original}\n")
        (self.root / cid / self.usage).write_text("70000000\n")
        self.id = cid
        return self.root / cid / self.limit

    def running(self) -> list[Container]:
        pod = "secrets-store-csi-driver-node-x"
        return (
            [Container(self.id, os.getpid(), "secrets-store-csi-driver", pod, "csi-driver")]
            if self.id
            else []
        )


LIMITED = f"{70000000 + faults_resources.HEADROOM_BYTES}\n"
V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "9223372036854771712")


@pytest.mark.parametrize(("limit", "usage", "original"), [("memory.high", "memory.current", "max"), V1])
def test_memory_limit_saved_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str, usage: str, original: str
) -> None:
    driver = FakeDriver(tmp_path, monkeypatch, limit, usage)
    first = driver.start("d1", original)
    assert memory_limit_file(first.parent) == (first, first.parent / usage)
    fault = DriverMemoryPressure(ctx())
    assert fault.probe() is None
    fault.inject()
    assert first.read_text() == LIMITED
    fault.heal()
    fault.heal()
    assert first.read_text() == f"{original}\n"
    fault.inject()
    first.unlink()  # the container was replaced meanwhile
    fault.heal()


def test_memory_limit_follows_a_new_driver_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FakeDriver(tmp_path, monkeypatch, V1[0], V1[1])
    fault = DriverMemoryPressure(ctx())
    fault.inject()  # no driver container (back-off, rollout): returns at once
    first = driver.start("d1", V1[2])
    wait_until("the keeper to limit the driver", lambda: first.read_text() == LIMITED)
    second = driver.start("d2", V1[2])  # killed and restarted while the fault holds
    (second.parent / V1[1]).write_text("20000000\n")  # still starting: less than it will use
    wait_until("the new container limited", lambda: second.read_text() == LIMITED)
    fault.heal()
    assert first.read_text() == second.read_text() == f"{V1[2]}\n"
    third = driver.start("d3", V1[2])
    time.sleep(0.3)
    assert third.read_text() == f"{V1[2]}\n"  # nothing held once healed


def test_memory_pressure_probe_names_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = Container(
        "d1", os.getpid(), "secrets-store-csi-driver", "secrets-store-csi-driver-node-x", "csi-driver"
    )
    monkeypatch.setattr(faults, "running_containers", lambda *a, **k: [me])
    monkeypatch.setattr(faults_resources, "cgroup_dir", lambda pid, controller: tmp_path)
    assert "memory.high" in (DriverMemoryPressure(ctx()).probe() or "")


def test_disk_full_refuses_the_host_root_filesystem() -> None:
    reason = DiskFull(ctx(kubelet_root=Path("/"))).probe()
    assert reason is not None and "host's root filesystem" in reason


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(tmp_path)], check=False
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield tmp_path
    subprocess.run(["umount", str(tmp_path)], check=True)


def test_disk_full_fills_and_frees_a_small_filesystem(small_fs: Path) -> None:
    fault = DiskFull(ctx(kubelet_root=small_fs))
    assert fault.probe() is None
    fault.inject()
    assert os.statvfs(small_fs).f_bavail == 0
    with pytest.raises(OSError, match="No space"), open(small_fs / "more", "wb", buffering=0) as f:
        f.write(b"x" * 8192)
    fault.heal()
    fault.heal()
    (small_fs / "more").unlink(missing_ok=True)
    stat = os.statvfs(small_fs)
    assert stat.f_bavail == stat.f_blocks


def _daemonset(
    flag: str, generation: int, observed: int, desired: int, updated: int, available: int
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"template": {"spec": {"containers": [{"name": "csi-driver", "args": ["-n", flag]}]}}},
        "status": {
            "observedGeneration": observed,
            "desiredNumberScheduled": desired,
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
        },
    }


def test_rollout_ends_the_ccd_edit_fault_only_once_every_pod_runs_the_restored_template() -> None:
    """Seed 20: the restoring edit landed, but the DaemonSet replaced the driver pod a minute later;
    that time must count as fault time (the fault's heal waits for this state)."""
    from chaos.faults_cluster import rollout_state

    unseen = "controller has not seen the template yet"
    assert rollout_state(_daemonset("-v=4", 3, 3, 1, 1, 1), "-v=2") == "template without -v=2 yet"
    assert rollout_state(_daemonset("-v=2", 4, 3, 1, 1, 1), "-v=2") == unseen
    assert rollout_state(_daemonset("-v=2", 4, 4, 1, 0, 1), "-v=2") == "updated 0/1, available 1/1"
    assert rollout_state(_daemonset("-v=2", 4, 4, 1, 1, 0), "-v=2") == "updated 1/1, available 0/1"
    assert rollout_state(_daemonset("-v=2", 4, 4, 1, 1, 1), "-v=2") == "done"
