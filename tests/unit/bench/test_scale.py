"""bench.scale's pure parts: soak slopes and verdicts, the cluster's flat verdict, watch counting from the
audit log and the apiserver's metrics, the table, and the task probe's count."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from bench import scale_apiserver, scale_report, soak, task_probe
from bench.audit import AuditLog, user_agent_matcher


def samples(
    rss: list[float], fds: list[int], tasks: Sequence[int | None], step: float = 10.0
) -> list[dict[str, Any]]:
    return [
        {"t": i * step, "rss_mib": r, "fds": f, "threads": 7, "tasks": t}
        for i, (r, f, t) in enumerate(zip(rss, fds, tasks, strict=True))
    ]


def test_slope_is_mib_per_ten_minutes() -> None:
    # 0.1 MiB per 10 s = 6 MiB per 10 minutes
    points = [(t * 10.0, 50.0 + 0.1 * t) for t in range(20)]
    assert soak.slope_per_10min(points) == pytest.approx(6.0)
    assert soak.slope_per_10min([(0.0, 1.0), (10.0, 1.0)]) is None  # too few points


def test_soak_flat_after_warmup_ignores_warmup_growth() -> None:
    warmup, after = [40.0, 45.0, 50.0], [55.0, 55.1, 54.9, 55.0, 55.05, 55.0]  # 3 samples in 30 s warm-up
    fds, tasks = [20, 22, 24, *[25] * 6], [5, 9, 12, 12, 13, 12, 12, 13, 12]
    doc = soak.analyse(samples([*warmup, *after], fds, tasks), 30.0)
    assert doc["samples_after_warmup"] == 6
    assert doc["rss_slope_mib_per_10min"] is not None and abs(doc["rss_slope_mib_per_10min"]) < 1.0
    assert doc["fds"] == {"baseline": 25, "end": 25, "last": 25, "min": 25, "max": 25, "delta": 0}
    assert doc["flat"] is True


def test_soak_leak_is_not_flat() -> None:
    # RSS flat but one fd per sample: a descriptor leak (medians of the first and last minute: 22 and 56)
    doc = soak.analyse(samples([50.0] * 40, list(range(20, 60)), [10] * 40), 0.0)
    assert doc["fds"]["delta"] == 34 and doc["flat"] is False
    # three descriptors more for good from the middle on
    doc = soak.analyse(samples([50.0] * 40, [31] * 20 + [34] * 20, [10] * 40), 0.0)
    assert doc["fds"]["delta"] == 3 and doc["flat"] is False
    # RSS growing 0.2 MiB per 10 s = 12 MiB per 10 min
    doc = soak.analyse(samples([50.0 + 0.2 * i for i in range(8)], [20] * 8, [10] * 8), 0.0)
    assert doc["rss_slope_mib_per_10min"] > 1.0 and doc["flat"] is False


def test_soak_one_sample_catching_a_connection_come_or_gone_is_not_a_leak() -> None:
    fds = [31] * 20 + [29, 31, 30, 31] * 4 + [31, 31, 31, 28]  # a 20-min run's shape, at 10 s per sample
    doc = soak.analyse(samples([50.0] * 40, fds, [10] * 40), 0.0)
    assert doc["fds"] == {"baseline": 31, "end": 31, "last": 28, "min": 28, "max": 31, "delta": 0}
    assert doc["flat"] is True


def test_soak_last_half_slope_tells_a_leak_from_growth_that_slows() -> None:
    leak = soak.analyse(samples([50.0 + 0.02 * i for i in range(40)], [20] * 40, [10] * 40), 0.0)
    assert leak["rss_slope_last_half_mib_per_10min"] == pytest.approx(leak["rss_slope_mib_per_10min"])
    settling = [50.0 + 1.5 * (1 - 0.93**i) for i in range(40)]  # grows, ever slower
    doc = soak.analyse(samples(settling, [20] * 40, [10] * 40), 0.0)
    assert doc["rss_slope_last_half_mib_per_10min"] < doc["rss_slope_mib_per_10min"] / 2


def test_soak_tasks_not_observable_is_said_not_judged() -> None:
    doc = soak.analyse(samples([50.0] * 5, [20] * 5, [None] * 5), 0.0)
    assert doc["tasks"] is None and doc["flat"] is True


def cluster_doc(ours: list[float], upstream: list[float]) -> dict[str, Any]:
    def runs(values: list[float]) -> dict[str, Any]:
        return {
            str(m): {"idle": {"requests_per_min_per_node": v, "watches_per_node": 2}}
            for m, v in zip((10, 25, 50), values, strict=True)
        }

    return {"cluster": {"ours": runs(ours), "upstream": runs(upstream)}}


def test_flat_verdict_compares_largest_with_smallest_m() -> None:
    verdicts = scale_report.flat_verdicts(cluster_doc([0.0, 0.0, 0.0], [1.0, 1.05, 1.2]))
    assert verdicts["ours"]["flat"] is True and verdicts["ours"]["growth"] == 1.0  # 0 and 0
    assert verdicts["upstream"]["flat"] is False and verdicts["upstream"]["growth"] == 1.2
    assert verdicts["upstream"]["from_m"] == 10 and verdicts["upstream"]["to_m"] == 50
    assert scale_report.flat_verdicts(cluster_doc([2.0, 2.1, 2.2], [0, 0, 0]))["ours"]["flat"] is True
    assert scale_report.flat_verdicts({"cluster": {"ours": {"10": {}}}}) == {}


def test_table_prints_cluster_rows_growth_and_verdicts() -> None:
    text = scale_report.table(cluster_doc([0.0, 0.0, 0.0], [1.0, 1.05, 1.2]))
    assert "M=10" in text and "M=50" in text
    assert "flat at cluster scale (ours)" in text and ": FLAT" in text
    assert "flat at cluster scale (upstream)" in text and "NOT FLAT" in text
    row = next(line for line in text.splitlines() if line.startswith("idle apiserver req/min per node"))
    assert row.split()[-1] == "1"  # ours: growth 0 -> 0


def audit_line(audit_id: str, stage: str, agent: str, uri: str, verb: str = "watch") -> str:
    return json.dumps(
        {
            "auditID": audit_id,
            "stage": stage,
            "verb": verb,
            "userAgent": agent,
            "requestURI": uri,
            "objectRef": {"resource": uri.split("?")[0].rsplit("/", 1)[-1]},
            "requestReceivedTimestamp": "2026-12-01T00:00:00.000000Z",
        }
    )


def test_open_watches_are_started_and_not_completed(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    audit = AuditLog(log)
    mark = audit.mark(time.time())
    ours = "secrets-store-csi-py/driver/0.1"
    lines = [
        audit_line("a", "ResponseStarted", ours, "/apis/x/v1/namespaces/ns1/secretproviderclasses?watch=1"),
        audit_line(
            "b", "ResponseStarted", ours, "/apis/x/v1/secretproviderclasspodstatuses?watch=1&l=node-1"
        ),
        audit_line("a", "ResponseComplete", ours, "/apis/x/v1/namespaces/ns1/secretproviderclasses?watch=1"),
        audit_line("c", "ResponseStarted", ours, "/apis/x/v1/namespaces/other/secretproviderclasses?watch=1"),
        audit_line("d", "ResponseStarted", "csi-secrets-store/v1.6.0", "/api/v1/pods?watch=1"),
        audit_line("e", "ResponseComplete", ours, "/api/v1/namespaces/ns1/pods/p", verb="get"),
    ]
    log.write_text("\n".join(lines) + "\n")
    matcher = user_agent_matcher("secrets-store-csi-py/driver/", scope=("node-1", "/namespaces/ns1/"))
    got = scale_apiserver.open_watches(audit, mark, matcher)
    assert got == {"open": 1, "by_resource": {"secretproviderclasspodstatuses": 1}, "opened": 2}


class FakeApi:
    def __init__(self, text: str) -> None:
        self.text = text

    async def get_text(self, path: str) -> str:
        assert path == "/metrics"
        return self.text


async def test_served_watches_sums_the_apiserver_gauge_by_resource() -> None:
    text = "\n".join(
        [
            "# TYPE apiserver_longrunning_requests gauge",
            'apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="cluster",'
            'subresource="",verb="WATCH",version="v1"} 3',
            'apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="namespace",'
            'subresource="",verb="WATCH",version="v1"} 2',
            'apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="namespace",'
            'subresource="log",verb="CONNECT",version="v1"} 9',
            'apiserver_longrunning_requests_other{resource="x",verb="WATCH"} 5',
        ]
    )
    got = await scale_apiserver.served_watches(FakeApi(text))  # type: ignore[arg-type]
    assert got == {"pods": 5}


def test_task_probe_counts_the_loops_tasks(tmp_path: Path) -> None:
    policy = task_probe.RecordingPolicy()
    loop = policy.new_event_loop()

    async def idle() -> None:
        await asyncio.sleep(30)

    async def main() -> dict[str, Any]:
        workers = [asyncio.create_task(idle()) for _ in range(3)]
        snap = await asyncio.create_task(task_probe.snapshot())  # as the probe thread runs it
        for w in workers:
            w.cancel()
        return snap

    try:
        snap = loop.run_until_complete(main())
    finally:
        loop.close()
    assert policy.loops == [loop]
    assert snap["tasks"] == 4  # main + 3 workers, the asking one excluded
    assert snap["top"]["test_task_probe_counts_the_loops_tasks.<locals>.idle"] == 3
    assert task_probe.read(tmp_path / "missing.json") is None
