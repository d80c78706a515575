"""Command-line flags, named and defaulted as upstream's driver so manifests work unchanged."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse a Go duration such as `2m`, `1h30m`, `500ms` into seconds."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 30s, 2m, 1h30m)")
    return total


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes"):
        return True
    if value in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (use true or false)")


def parse_uids(text: str) -> frozenset[int]:
    try:
        uids = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid uid list {text!r} (example: 1000,1001)") from None
    if any(uid < 0 for uid in uids):
        raise argparse.ArgumentTypeError(f"invalid uid list {text!r}: uids are not negative")
    return uids


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: a positive integer")
    return value


# Bounds on what one pod can make the node plugin do. Each default admits everything upstream's
# defaults admit: a provider reply is at most --max-call-recv-msg-size (4 MiB) in both drivers, so
# no file is larger and, at >= 5 bytes per distinct file entry, no reply lists 1 Mi files; an SPC
# (at most 3 MiB in etcd) cannot list 1 Mi secretObjects. Concurrency is queued, never refused.
DEFAULT_MAX_OBJECTS = 1 << 20
DEFAULT_MAX_FILE_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_PUBLISHES = 4


@dataclass(frozen=True, slots=True)
class Config:
    endpoint: str
    driver_name: str
    node_id: str
    log_format_json: bool
    verbosity: int
    provider_volume: Path
    additional_provider_volume_paths: tuple[Path, ...]
    metrics_addr: str
    enable_secret_rotation: bool
    rotation_poll_interval: float
    max_call_recv_msg_size: int
    provider_health_check: bool
    provider_health_check_interval: float
    kubeconfig: str | None
    kubelet_root_dir: Path
    provider_timeout: float
    enable_secret_sync: bool = True
    provider_socket_allowed_uids: frozenset[int] = frozenset()
    max_objects_per_volume: int = DEFAULT_MAX_OBJECTS
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_concurrent_publishes_per_pod: int = DEFAULT_MAX_CONCURRENT_PUBLISHES
    kubelet_registration_path: str = ""
    plugin_registration_dir: Path = Path("/registration")

    @property
    def provider_dirs(self) -> tuple[Path, ...]:
        """Directories searched for `<provider>.sock`, in upstream's order."""
        return (*self.additional_provider_volume_paths, self.provider_volume)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="secrets-store-csi-driver",
        description="Secrets Store CSI node plugin (Python distribution).",
        allow_abbrev=False,
    )
    flag = p.add_argument

    def boolean(name: str, help_text: str, default: bool = False) -> None:
        flag(name, type=parse_bool, nargs="?", const=True, default=default, help=help_text)

    flag("--endpoint", default="unix:///tmp/csi.sock", help="CSI endpoint (unix:///path)")
    flag("--drivername", default="secrets-store.csi.k8s.io", help="name of the driver")
    flag("--nodeid", default="", help="node name this plugin serves")
    boolean("--log-format-json", "log in JSON")
    flag(
        "-v", "--v", dest="verbosity", type=int, default=0, help="log verbosity (klog style; 5 logs requests)"
    )
    flag("--provider-volume", default="/var/run/secrets-store-csi-providers", help="provider sockets dir")
    flag(
        "--additional-provider-volume-paths",
        default="/etc/kubernetes/secrets-store-csi-providers",
        help="comma-separated extra provider sockets dirs, searched first",
    )
    flag("--metrics-addr", default=":8095", help="address for /metrics and /healthz")
    boolean("--enable-secret-rotation", "refresh mounted contents when kubelet republishes")
    flag("--rotation-poll-interval", type=parse_duration, default=parse_duration("2m"))
    boolean("--enable-pprof", "accepted for compatibility; Python has no pprof endpoint")
    flag("--pprof-port", type=int, default=6065, help="accepted for compatibility")
    flag("--max-call-recv-msg-size", type=int, default=4 * 1024 * 1024, help="max provider response bytes")
    boolean("--provider-health-check", "periodically call Version on each provider")
    flag("--provider-health-check-interval", type=parse_duration, default=parse_duration("2m"))
    flag("--metrics-backend", default="Prometheus", help="only Prometheus is supported")
    boolean("--version", "print version JSON and exit")
    flag("--kubeconfig", default=None, help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    flag(
        "--kubelet-root-dir",
        default="/var/lib/kubelet",
        help="target paths must lie under <dir>/pods (our addition; refuses stray targets)",
    )
    flag(
        "--provider-timeout",
        type=parse_duration,
        default=parse_duration("60s"),
        help="deadline of one provider Mount call (our addition)",
    )
    boolean(
        "--enable-secret-sync",
        "create/update Kubernetes Secrets from SecretProviderClass secretObjects (our addition; "
        "upstream governs this with RBAC only)",
        default=True,
    )
    flag(
        "--provider-socket-allowed-uids",
        type=parse_uids,
        default=frozenset(),
        help="comma-separated uids, besides root and the provider directory's owner, that may own a "
        "provider socket (our addition; any other socket is refused as planted)",
    )
    flag(
        "--max-objects-per-volume",
        type=positive,
        default=DEFAULT_MAX_OBJECTS,
        help="most files one provider reply may hold, and most secretObjects one SPC may sync "
        "(our addition; the default admits every reply upstream's defaults admit)",
    )
    flag(
        "--max-file-size",
        type=positive,
        default=DEFAULT_MAX_FILE_SIZE,
        help="largest file a provider reply may hold, in bytes (our addition)",
    )
    flag(
        "--max-concurrent-publishes-per-pod",
        type=positive,
        default=DEFAULT_MAX_CONCURRENT_PUBLISHES,
        help="volumes of one pod published at once; more wait their turn (our addition)",
    )
    flag(
        "--kubelet-registration-path",
        default="",
        help="the CSI socket as kubelet sees it; when set, the driver registers itself with kubelet "
        "through --plugin-registration-dir (our addition; replaces node-driver-registrar)",
    )
    flag(
        "--plugin-registration-dir",
        default="/registration",
        help="kubelet's plugins_registry directory as mounted in the driver's container (our addition)",
    )
    return p


def parse_config(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    ns = build_parser().parse_args(argv)
    if ns.metrics_backend.lower() != "prometheus":
        raise SystemExit(
            f"unsupported --metrics-backend {ns.metrics_backend!r}: only Prometheus is supported"
        )
    extra = tuple(Path(p.strip()) for p in ns.additional_provider_volume_paths.split(",") if p.strip())
    cfg = Config(
        endpoint=ns.endpoint,
        driver_name=ns.drivername,
        node_id=ns.nodeid,
        log_format_json=ns.log_format_json,
        verbosity=ns.verbosity,
        provider_volume=Path(ns.provider_volume),
        additional_provider_volume_paths=extra,
        metrics_addr=ns.metrics_addr,
        enable_secret_rotation=ns.enable_secret_rotation,
        rotation_poll_interval=ns.rotation_poll_interval,
        max_call_recv_msg_size=ns.max_call_recv_msg_size,
        provider_health_check=ns.provider_health_check,
        provider_health_check_interval=ns.provider_health_check_interval,
        kubeconfig=ns.kubeconfig,
        kubelet_root_dir=Path(ns.kubelet_root_dir),
        provider_timeout=ns.provider_timeout,
        enable_secret_sync=ns.enable_secret_sync,
        provider_socket_allowed_uids=ns.provider_socket_allowed_uids,
        max_objects_per_volume=ns.max_objects_per_volume,
        max_file_size=ns.max_file_size,
        max_concurrent_publishes_per_pod=ns.max_concurrent_publishes_per_pod,
        kubelet_registration_path=ns.kubelet_registration_path,
        plugin_registration_dir=Path(ns.plugin_registration_dir),
    )
    return cfg, ns


def unix_socket_path(endpoint: str) -> str:
    """`unix:///csi/csi.sock` and upstream's `unix://tmp/csi.sock` both mean an absolute path."""
    if endpoint.startswith("unix://"):
        rest = endpoint[len("unix://") :]
        return rest if rest.startswith("/") else "/" + rest
    if endpoint.startswith("unix:"):
        return endpoint[len("unix:") :]
    if endpoint.startswith("/"):
        return endpoint
    raise ValueError(f"unsupported endpoint {endpoint!r}: use unix:///path/to/csi.sock")
