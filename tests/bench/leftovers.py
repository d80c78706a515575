"""Namespaces and nodes a benchmark run created, found by label: a run removes its own at the end, and
only objects older than a limit (default 120 minutes: no run lasts that long) of other runs at its start.

Every namespace and node the bench creates carries `app.kubernetes.io/managed-by=sscsi-bench` and
`sscsi-bench/run=<run id>` (one id per `python -m bench` or `python -m bench.scale` run), so two runs on
one cluster never delete each other's objects. An interrupted run (SIGKILL, a crash) leaves its objects;
remove them by hand with

    PYTHONPATH=tests:hack .venv/bin/python -m bench.leftovers --older-than 30    # minutes; --dry-run lists
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.env import NODE
from sscsi_kube import KubeClient
from sscsi_kube.resources import NAMESPACE

from . import fixtures

DEFAULT_AGE_MINUTES = 120.0


def _created(obj: dict[str, Any]) -> float | None:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def select(items: list[dict[str, Any]], older_than_s: float | None, now: float) -> list[str]:
    """Names of `items` created more than `older_than_s` seconds before `now` (all when None; an object
    without a readable creation time counts as old)."""
    out = []
    for obj in items:
        created = _created(obj)
        if older_than_s is None or created is None or now - created > older_than_s:
            out.append(obj["metadata"]["name"])
    return out


async def find(
    api: KubeClient, *, run_label: str | None = None, older_than_s: float | None = None
) -> tuple[list[str], list[str]]:
    """(namespaces, nodes) the bench created: of run `run_label` (any run when None), older than
    `older_than_s` seconds (any age when None)."""
    labels = {fixtures.MANAGED_BY: fixtures.BENCH}
    if run_label is not None:
        labels[fixtures.RUN_LABEL] = run_label
    now = time.time()
    ns = await api.list(NAMESPACE, labels=labels)
    nodes = await api.list(NODE, labels=labels)
    return (
        select(ns.get("items") or [], older_than_s, now),
        select(nodes.get("items") or [], older_than_s, now),
    )


async def remove(api: KubeClient, namespaces: list[str], nodes: list[str], wait: float = 0.0) -> None:
    await fixtures.delete_namespaces(api, namespaces, wait=wait)
    await fixtures.delete_nodes(api, nodes)


async def remove_run(api: KubeClient, run_label: str) -> tuple[list[str], list[str]]:
    """Whatever run `run_label` still has (its phases remove their own; this catches a failed one's)."""
    namespaces, nodes = await find(api, run_label=run_label)
    await remove(api, namespaces, nodes)
    return namespaces, nodes


async def remove_older_than(
    api: KubeClient, minutes: float, wait: float = 0.0
) -> tuple[list[str], list[str]]:
    """Objects of any bench run created more than `minutes` ago: interrupted runs' leftovers."""
    namespaces, nodes = await find(api, older_than_s=minutes * 60.0)
    await remove(api, namespaces, nodes, wait)
    return namespaces, nodes


def add_age_option(parser: argparse.ArgumentParser) -> None:
    """`--delete-leftovers-older-than MINUTES` for the runs' own parsers."""
    parser.add_argument(
        "--delete-leftovers-older-than",
        dest="leftovers_minutes",
        type=float,
        default=DEFAULT_AGE_MINUTES,
        metavar="MINUTES",
        help="at the start, delete other runs' namespaces/nodes older than this (default: %(default)g; "
        "the run's own are deleted at its end)",
    )


async def before_run(api: KubeClient, minutes: float, wait: float, progress: Any = print) -> None:
    """At a run's start: interrupted runs' objects older than `minutes` (never a live run's)."""
    namespaces, nodes = await remove_older_than(api, minutes, wait)
    if namespaces or nodes:
        progress(f"removed {len(namespaces)} namespaces / {len(nodes)} nodes older than {minutes:g} min")


async def after_run(api: KubeClient, run_label: str, progress: Any = print) -> None:
    """At a run's end: whatever of its own is left (a failed phase's); a failure is reported, not raised
    (the run's figures matter more than its cleanup)."""
    try:
        namespaces, nodes = await remove_run(api, run_label)
    except Exception as err:
        progress(f"could not remove this run's objects (label {fixtures.RUN_LABEL}={run_label}): {err!r}")
        return
    if namespaces or nodes:
        progress(f"removed {len(namespaces)} namespaces / {len(nodes)} nodes this run left")


async def _main(args: argparse.Namespace) -> int:
    api = KubeClient.from_config(args.kubeconfig, "sscsi-bench/leftovers", timeout=30.0)
    try:
        namespaces, nodes = await find(api, older_than_s=args.older_than * 60.0)
        print(f"{len(namespaces)} namespaces, {len(nodes)} nodes older than {args.older_than:g} min")
        for name in [*namespaces, *nodes]:
            print(f"  {name}")
        if not args.dry_run:
            await remove(api, namespaces, nodes, wait=120.0)
            print("deleted")
    finally:
        await api.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    cluster = os.environ.get("SSCSI_CLUSTER_DIR") or "/tmp/sscsi-cluster"
    p = argparse.ArgumentParser(prog="python -m bench.leftovers", description=__doc__.split("\n\n")[0])
    p.add_argument("--older-than", type=float, required=True, metavar="MINUTES", help="age of what to delete")
    p.add_argument("--kubeconfig", default=str(Path(cluster) / "admin.kubeconfig"))
    p.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
