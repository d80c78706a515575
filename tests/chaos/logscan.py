"""Invariant 5: no stamp digest in any log of the node or its control plane.

Scanned, from where each file stood when the run started: every container log kubelet keeps under
/var/log/pods (the driver's, liveness probe's, provider's and operator's, every instance, killed ones too:
what `kubectl logs [--previous]` serves) and every file in $SSCSI_NODE_CLUSTER_DIR/logs (kubelet,
containerd, etcd, apiserver, controller-manager, scheduler, kube-proxy, the audit log). Pod log
directories vanish with their pod (a DaemonSet rollout replaces the driver's), so the scan runs every
few seconds and keeps, per file, how far it has read. It collects every 32-hex-digit token; at the end
they are matched against every digest the provider could have stamped for the run's pods (each object,
every version of the pod's lifetime): a superset of what was observed, so nothing logged is missed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .stamps import DIGEST_TOKEN

POD_LOGS = Path("/var/log/pods")
MAX_READ = 64 * 1024 * 1024  # per file per scan


def log_files(cluster_logs: Path) -> Iterator[Path]:
    yield from (p for p in POD_LOGS.glob("*/*/*") if p.is_file())
    yield from (p for p in cluster_logs.glob("*") if p.is_file())


class LogScan:
    def __init__(self, cluster_logs: Path) -> None:
        self._cluster_logs = cluster_logs
        self._offsets: dict[Path, int] = {}
        self._baseline: dict[Path, int] = {}
        self.tokens: dict[str, str] = {}  # token -> the first file it was seen in
        self.bytes_scanned = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mark_start(self) -> None:
        """Files as they are now: only what is written after this can hold this run's digests."""
        for path in log_files(self._cluster_logs):
            try:
                self._baseline[path] = path.stat().st_size
            except OSError:
                continue
        self._offsets = dict(self._baseline)

    def scan(self) -> None:
        with self._lock:
            for path in log_files(self._cluster_logs):
                self._scan_file(path)

    def _scan_file(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            offset = self._offsets.get(path, 0)
            if size < offset:  # truncated or replaced: read it again from the start
                offset = 0
            if size == offset:
                return
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read(min(size - offset, MAX_READ))
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1  # whole lines only: a token is never split between scans
        if end == 0 and len(chunk) < MAX_READ:
            return
        end = end or len(chunk)
        self.bytes_scanned += end
        self._offsets[path] = offset + end
        for token in DIGEST_TOKEN.findall(chunk[:end]):
            self.tokens.setdefault(token.decode(), str(path))

    def start(self, every: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                self.scan()

        self._thread = threading.Thread(target=loop, name="chaos-logscan", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self.scan()

    def leaks(self, digests: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(what, digest, file) for each possible digest found in a log."""
        with self._lock:
            return [(what, d, self.tokens[d]) for d, what in digests if d in self.tokens]
