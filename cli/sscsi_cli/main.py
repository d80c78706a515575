"""`kubectl secrets-store`: diagnose a pod's secrets-store volumes (`doctor`) or the cluster (`status`).

Installed as the console script `kubectl-secrets_store`; kubectl finds it on PATH and runs it as
`kubectl secrets-store ...`. It reads as the user of the kubeconfig: what their RBAC forbids is
reported as "could not check", never worked around.

Exit codes: 0 every link ok; 1 a link is broken; 2 usage (no such pod, no such volume);
3 no link broken but some could not be checked (RBAC); 4 the cluster could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from . import names, render
from .access import POD, Cluster, Forbidden, NotFound, Unreachable
from .doctor import DoctorReport, diagnose
from .facts import gather_pod, secrets_store_volumes
from .status import NODE_HEADER, StatusReport, gather_cluster, judge
from .verdict import EXIT_UNCHECKED, EXIT_USAGE, overall

EXIT_UNREACHABLE = 4


class UsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl secrets-store",
        description="Diagnose the Secrets Store CSI Driver: a pod's volumes link by link, or the cluster.",
        epilog="exit codes: 0 ok, 1 a link is broken, 2 usage, 3 a link could not be checked (RBAC), "
        "4 cluster unreachable",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", choices=["text", "json"], default="text")
    common.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    common.add_argument("--context", help="the kubeconfig context to use (default: the current one)")
    common.add_argument(
        "--driver-namespace",
        default=names.DRIVER_NAMESPACE,
        help="where the driver's DaemonSet runs when no ClusterCSIDriver says (default %(default)s)",
    )
    common.add_argument("--driver-daemonset", default=names.DAEMONSET, help="default %(default)s")
    sub = top.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", parents=[common], help="walk the chain from a pod to its secrets")
    doctor.add_argument("pod")
    doctor.add_argument("-n", "--namespace", help="the pod's namespace (default: the context's)")
    sub.add_parser("status", parents=[common], help="operator, driver and providers per node")
    return top


async def doctor(cluster: Cluster, args: argparse.Namespace) -> DoctorReport:
    try:
        pod = await cluster.get(POD, args.pod, args.namespace)
    except NotFound:
        raise UsageError(f"pod {args.namespace}/{args.pod} not found") from None
    if not secrets_store_volumes(pod):
        raise UsageError(f"pod {args.namespace}/{args.pod} has no volume of driver {names.DRIVER_NAME}")
    facts = await gather_pod(
        cluster, pod, driver_ns=args.driver_namespace, daemonset_name=args.driver_daemonset
    )
    return diagnose(facts)


async def status(cluster: Cluster, args: argparse.Namespace) -> StatusReport:
    facts = await gather_cluster(
        cluster, driver_ns=args.driver_namespace, daemonset_name=args.driver_daemonset
    )
    return judge(facts)


def print_doctor(report: DoctorReport, output: str) -> None:
    if output == "json":
        print(render.as_json(report.to_json()))
        return
    print(render.summary(f"pod {report.pod}", overall(report.exit_code), report.exit_code))
    print("\n".join(render.sections_text(report.sections)))


def print_status(report: StatusReport, output: str) -> None:
    if output == "json":
        print(render.as_json(report.to_json()))
        return
    print(render.summary("secrets-store CSI driver", overall(report.exit_code), report.exit_code))
    print("\n".join(render.sections_text(report.sections)))
    if report.rows:
        print()
        print("\n".join(render.table([NODE_HEADER, *(row.cells() for row in report.rows)])))


async def run(args: argparse.Namespace, cluster: Cluster) -> int:
    if args.command == "doctor":
        report = await doctor(cluster, args)
        print_doctor(report, args.output)
        return report.exit_code
    result = await status(cluster, args)
    print_status(result, args.output)
    return result.exit_code


async def _main(args: argparse.Namespace) -> int:
    from .kube_cluster import KubeCluster

    cluster = KubeCluster.connect(args.kubeconfig, args.context)
    if getattr(args, "namespace", "") is None:
        args.namespace = cluster.namespace
    try:
        return await run(args, cluster)
    finally:
        await cluster.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Forbidden as err:
        print(f"error: could not check: RBAC forbids {err.what}", file=sys.stderr)
        return EXIT_UNCHECKED
    except Unreachable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
