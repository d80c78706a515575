"""`secrets-store-csi-operator`: run the kopf operator for the ClusterCSIDriver."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

import kopf

from . import handlers
from .settings import Settings

DEFAULT_LIVENESS = "http://0.0.0.0:8081/healthz"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secrets-store-csi-operator",
        description="Deploys, repairs and removes the Secrets Store CSI Driver for a ClusterCSIDriver.",
        allow_abbrev=False,
    )
    parser.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument(
        "--namespace",
        help="namespace of the driver's namespaced objects (default: $OPERAND_NAMESPACE, then the "
        "operator's own namespace, then secrets-store-csi-driver)",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="run with kopf peering (KopfPeering NAME in the namespace) instead of --standalone; "
        "give every replica a distinct --priority",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority (with --peering)")
    parser.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        help=f"liveness endpoint URL, or 'off' (default {DEFAULT_LIVENESS})",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=30.0,
        help="seconds between periodic passes: the bound on how long drift lasts (default 30)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log at DEBUG until the spec's operatorLogLevel applies"
    )
    return parser


def _quiet_child_watchers(record: logging.LogRecord) -> bool:
    """Drop kopf's line for every child event (a rollout makes dozens) and every event of a
    ClusterCSIDriver with the force-removal annotation; failures still show."""
    quiet = ("Handler 'watch-", "Handler 'force-removal'")
    return not (record.levelno < logging.WARNING and str(record.msg).startswith(quiet))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it from there
    settings = Settings.from_environment()
    if args.namespace:
        settings = dataclasses.replace(settings, namespace=args.namespace)
    settings = dataclasses.replace(settings, resync_seconds=args.resync_interval)

    kopf.configure(verbose=args.verbose)
    for noisy in ("httpx2", "httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_quiet_child_watchers)
    logging.getLogger(__name__).info(
        "Starting: driver namespace %s, images %s", settings.namespace, dataclasses.asdict(settings.images)
    )

    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings, kubeconfig=args.kubeconfig)
    kopf.run(
        registry=registry,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
        # Namespaced children are watched in this namespace only; cluster-scoped ones cluster-wide.
        namespaces=[settings.namespace],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
