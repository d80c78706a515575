"""Where the apiserver is and who we are: kubeconfig or in-cluster service account, via lightkube.

lightkube's public API (`KubeConfig`, `SingleConfig`) finds and parses the configuration. Turning it
into an HTTP client (TLS context, client certificates, a bearer token re-read from its file when it
rotates, exec plugins) is `lightkube.config.client_adapter`, which lightkube's docs do not describe:
its public `AsyncClient` builds the same HTTP client but hides it, and cannot send what we need
(delete preconditions, the 201 of a server-side apply, discovery). This module is the one place
that relies on it; lightkube is pinned below 2 in pyproject.toml.
"""

from __future__ import annotations

import httpx2
from lightkube import KubeConfig
from lightkube.config.client_adapter import AsyncClient as _configured_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import SingleConfig


def _single(kubeconfig: str | None, context: str | None) -> SingleConfig:
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    single = config.get(context_name=context) if context else config.get()
    if single is None:
        raise RuntimeError("no usable Kubernetes configuration (kubeconfig context or in-cluster)")
    return single


def http_client(
    kubeconfig: str | None, user_agent: str, timeout: float, context: str | None = None
) -> httpx2.AsyncClient:
    """An HTTP client for the apiserver: `kubeconfig` file, else $KUBECONFIG, ~/.kube/config or in-cluster;
    `context` picks a kubeconfig context other than the current one (kubectl's --context)."""
    single = _single(kubeconfig, context)
    http = _configured_client(single, ConnectionParams(timeout=httpx2.Timeout(timeout)))
    http.headers["User-Agent"] = user_agent
    return http


def default_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """The namespace kubectl would use without -n: the context's, else "default" (in-cluster: the pod's)."""
    return _single(kubeconfig, context).namespace
