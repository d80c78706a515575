"""The local control plane of hack/cluster-up.sh, seen from the tests.

Paths are computed the way the Makefile computes them, so `pytest tests/e2e` run by hand
finds (or starts) the same cluster as `make cluster-up` / `make e2e`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from versions_env import read_env_file

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
FIELD_MANAGER = "sscsi-e2e"


class ClusterUpError(RuntimeError):
    """hack/cluster-up.sh failed; the message holds the end of its output."""


@dataclass(frozen=True)
class ClusterSettings:
    """Where the binaries and the cluster's state live (Makefile defaults)."""

    repo_root: Path
    cluster_dir: Path
    kube_bin: Path
    tools_bin: Path

    @classmethod
    def from_environment(cls, repo_root: Path = REPO_ROOT) -> ClusterSettings:
        # As in the Makefile: hack/versions.env is included and wins over the environment.
        versions = read_env_file(repo_root / "hack" / "versions.env")
        cache = Path(versions["TOOLS_CACHE"])
        cluster_dir = Path(os.environ.get("SSCSI_CLUSTER_DIR") or "/tmp/sscsi-cluster")
        return cls(
            repo_root=repo_root,
            # The scripts use `realpath -m`; the same spelling keeps process matching consistent.
            cluster_dir=Path(os.path.realpath(cluster_dir)),
            kube_bin=cache / f"kube-{versions['KUBE_VERSION']}" / "bin",
            tools_bin=cache / "tools" / "bin",
        )

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_dir / "admin.kubeconfig"

    @property
    def logs_dir(self) -> Path:
        return self.cluster_dir / "logs"

    @property
    def kubectl(self) -> Path:
        return self.kube_bin / "kubectl"

    def env(self) -> dict[str, str]:
        """The environment `make` gives hack/*.sh, plus KUBECONFIG for convenience."""
        env = dict(os.environ)
        env["SSCSI_CLUSTER_DIR"] = str(self.cluster_dir)
        env["KUBECONFIG_PATH"] = str(self.kubeconfig)
        env["KUBECONFIG"] = str(self.kubeconfig)
        venv_bin = self.repo_root / ".venv" / "bin"
        env["PATH"] = os.pathsep.join(
            [str(venv_bin), str(self.kube_bin), str(self.tools_bin), env.get("PATH", "")]
        )
        return env


Manifest = Path | str | Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Cluster:
    """A running local control plane and an admin `kubectl` bound to it."""

    kubeconfig: Path
    logs_dir: Path
    cluster_dir: Path
    kubectl_path: Path
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_settings(cls, settings: ClusterSettings) -> Cluster:
        return cls(
            kubeconfig=settings.kubeconfig,
            logs_dir=settings.logs_dir,
            cluster_dir=settings.cluster_dir,
            kubectl_path=settings.kubectl,
            env=settings.env(),
        )

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl with the admin kubeconfig; never raises on a non-zero exit."""
        return subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            env=dict(self.env),
            timeout=timeout,
            check=False,
        )

    def readyz(self) -> str:
        """The body of GET /readyz ("ok" when ready), or kubectl's error output."""
        out = self.kubectl("get", "--raw", "/readyz", "--request-timeout=5s", timeout=15)
        return out.stdout.strip() if out.returncode == 0 else out.stderr.strip()

    def apply(
        self, manifest: Manifest, *, namespace: str | None = None, field_manager: str = FIELD_MANAGER
    ) -> subprocess.CompletedProcess[str]:
        """Server-side apply of a file (Path), YAML text (str), an object or a list of objects.

        Raises AssertionError with kubectl's stderr when the apply fails.
        """
        args = ["apply", "--server-side", "--force-conflicts", f"--field-manager={field_manager}"]
        if namespace is not None:
            args += ["--namespace", namespace]
        text: str | None
        if isinstance(manifest, Path):
            args += ["--filename", str(manifest)]
            text = None
        else:
            args += ["--filename", "-"]
            if isinstance(manifest, str):
                text = manifest
            elif isinstance(manifest, Mapping):
                text = json.dumps(manifest)
            else:  # JSON is YAML; a v1 List is split into its items by kubectl
                text = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifest)})
        out = self.kubectl(*args, input=text)
        if out.returncode != 0:
            raise AssertionError(f"kubectl apply failed ({out.returncode}): {out.stderr.strip()}")
        return out


def _component_alive(settings: ClusterSettings, component: str) -> bool:
    pid_file = settings.cluster_dir / "pids" / f"{component}.pid"
    try:
        pid = int(pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    return Path(os.fsdecode(argv[0])).name == component and any(
        os.fsencode(f"{settings.cluster_dir}/") in arg for arg in argv
    )


def running_cluster(settings: ClusterSettings) -> Cluster | None:
    """The cluster of settings.cluster_dir when all its components run and /readyz is ok."""
    if not settings.kubeconfig.is_file():
        return None
    if not all(_component_alive(settings, component) for component in COMPONENTS):
        return None
    cluster = Cluster.from_settings(settings)
    return cluster if cluster.readyz() == "ok" else None


def ensure_cluster(settings: ClusterSettings, timeout: float = 240.0) -> Cluster:
    """Reuse the running cluster or start one with hack/cluster-up.sh (never stops it)."""
    cluster = running_cluster(settings)
    if cluster is not None:
        return cluster
    script = settings.repo_root / "hack" / "cluster-up.sh"
    try:
        out = subprocess.run(
            [str(script)],
            capture_output=True,
            text=True,
            env=settings.env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ClusterUpError(f"{script} did not finish within {timeout}s; logs: {settings.logs_dir}") from err
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-60:])
        raise ClusterUpError(f"{script} failed with exit code {out.returncode}:\n{tail}")
    cluster = Cluster.from_settings(settings)
    if cluster.readyz() != "ok":
        raise ClusterUpError(f"{script} succeeded but /readyz is not ok; logs: {settings.logs_dir}")
    return cluster
