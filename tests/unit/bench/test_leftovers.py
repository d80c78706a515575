"""bench.leftovers: a run finds and deletes its own namespaces and nodes by its label, and other runs'
only when they are older than the age limit."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from bench import fixtures, leftovers


def obj(name: str, age_s: float | None, run: str = "r1") -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {fixtures.MANAGED_BY: fixtures.BENCH, fixtures.RUN_LABEL: run},
    }
    if age_s is not None:
        meta["creationTimestamp"] = datetime.fromtimestamp(time.time() - age_s, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return {"metadata": meta}


def test_select_keeps_only_objects_older_than_the_limit() -> None:
    items = [obj("young", 60), obj("old", 3 * 3600), obj("no-time", None)]
    assert leftovers.select(items, 7200, time.time()) == ["old", "no-time"]
    assert leftovers.select(items, None, time.time()) == ["young", "old", "no-time"]


class FakeApi:
    """list() filters by label like the apiserver; delete() records what was deleted."""

    def __init__(self, namespaces: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
        self.objects = {"namespaces": namespaces, "nodes": nodes}
        self.deleted: list[str] = []

    async def list(self, res: Any, namespace: str | None = None, *, labels: dict[str, str]) -> dict[str, Any]:
        items = self.objects[res.plural]
        return {"items": [o for o in items if labels.items() <= o["metadata"]["labels"].items()]}

    async def delete(self, res: Any, name: str, *args: Any, **kwargs: Any) -> None:
        self.deleted.append(f"{res.plural}/{name}")


@pytest.fixture
def api() -> FakeApi:
    return FakeApi(
        [obj("mine", 10, "r1"), obj("live-other", 10, "r2"), obj("stale-other", 5 * 3600, "r3")],
        [obj("node-mine", 10, "r1"), obj("node-other", 10, "r2")],
    )


async def test_a_run_removes_its_own_objects_only(api: FakeApi) -> None:
    lines: list[str] = []
    await leftovers.after_run(api, "r1", lines.append)  # type: ignore[arg-type]
    assert api.deleted == ["namespaces/mine", "nodes/node-mine"]
    assert lines == ["removed 1 namespaces / 1 nodes this run left"]


async def test_a_run_start_removes_only_stale_objects_of_other_runs(api: FakeApi) -> None:
    await leftovers.before_run(api, leftovers.DEFAULT_AGE_MINUTES, 0.0, lambda _: None)  # type: ignore[arg-type]
    assert api.deleted == ["namespaces/stale-other"]


def test_runs_take_the_age_option() -> None:
    from bench import run

    assert run.parse_args([]).leftovers_minutes == leftovers.DEFAULT_AGE_MINUTES
    assert run.parse_args(["--delete-leftovers-older-than", "30"]).leftovers_minutes == 30
