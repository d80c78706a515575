"""Where the apiserver is and who we are: a kubeconfig file, or the pod's service account in-cluster.

The search order is lightkube's, which this module replaced (its import cost 3.9 MiB of every node
plugin's memory, and httpx below it another 7.9): an explicit kubeconfig file; else in-cluster when
the service account is mounted; else $KUBECONFIG (the first file of the list that exists), else
~/.kube/config. Read from a kubeconfig: the server (a path prefix included), its CA (file or data) or
insecure-skip-tls-verify, tls-server-name; client certificates (file or data); a token, tokenFile,
basic credentials or an exec plugin (auth.py). A kubeconfig in JSON needs no YAML parser.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .auth import Auth, ConfigError, ExecAuth, StaticAuth, TokenFileAuth

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_KUBECONFIG = "~/.kube/config"

__all__ = ["ConfigError", "Endpoint", "default_namespace", "endpoint"]


@dataclass(frozen=True)
class Endpoint:
    """One apiserver and our credentials for it (a kubeconfig context, or in-cluster)."""

    host: str
    port: int
    base_path: str  # the server URL's path, "" for most
    tls: ssl.SSLContext | None  # None: plain http
    server_hostname: str | None  # the name the certificate must carry, when not the host
    auth: Auth
    namespace: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        doc = json.loads(text)
    except ValueError:
        import yaml  # only a YAML kubeconfig pays for the parser

        doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a kubeconfig")
    return doc


def _named(doc: dict[str, Any], section: str, key: str, name: str) -> dict[str, Any]:
    for item in doc.get(section) or []:
        if item.get("name") == name:
            return dict(item.get(key) or {})
    raise ConfigError(f"kubeconfig has no {key} named {name!r}")


class _Files:
    """Paths relative to the kubeconfig's directory; *-data fields through a private temporary file."""

    def __init__(self, base: Path) -> None:
        self._base = base

    def path(self, value: str) -> str:
        return str((self._base / Path(value).expanduser()).resolve())


def _tls(cluster: dict[str, Any], user: dict[str, Any], files: _Files) -> ssl.SSLContext:
    if cluster.get("certificate-authority"):
        tls = ssl.create_default_context(cafile=files.path(cluster["certificate-authority"]))
    elif cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        tls = ssl.create_default_context(cadata=ca)
    else:
        tls = ssl.create_default_context()
    if cluster.get("insecure-skip-tls-verify"):
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    cert, key = user.get("client-certificate"), user.get("client-key")
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if cert_data or key_data:
        with tempfile.TemporaryDirectory(prefix="sscsi-kube-") as tmp:  # mode 0700: ours alone
            cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_file.write_bytes(base64.b64decode(cert_data or ""))
            key_file.write_bytes(base64.b64decode(key_data or ""))
            tls.load_cert_chain(cert_file, key_file)
    elif cert:
        tls.load_cert_chain(files.path(cert), files.path(key) if key else None)
    return tls


def _auth(user: dict[str, Any], files: _Files) -> Auth:
    if user.get("tokenFile"):
        return TokenFileAuth(files.path(user["tokenFile"]))
    if user.get("token"):
        return StaticAuth.bearer(str(user["token"]))
    if user.get("exec"):
        return ExecAuth(user["exec"])
    if user.get("username") and user.get("password"):
        return StaticAuth.basic(str(user["username"]), str(user["password"]))
    if user.get("auth-provider"):
        raise ConfigError("kubeconfig auth-provider is not supported (use an exec plugin)")
    return Auth()


def _server(server: str, tls: ssl.SSLContext) -> tuple[str, int, str, ssl.SSLContext | None]:
    url = urlsplit(server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"bad apiserver URL {server!r}")
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    return url.hostname, port, url.path.rstrip("/"), tls if https else None


def from_kubeconfig(path: Path, context: str | None = None) -> Endpoint:
    doc = _load(path)
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"{path}: no current-context and none asked for")
    ctx = _named(doc, "contexts", "context", name)
    cluster = _named(doc, "clusters", "cluster", str(ctx.get("cluster")))
    user = _named(doc, "users", "user", str(ctx["user"])) if ctx.get("user") else {}
    files = _Files(path.parent)
    host, port, base, tls = _server(
        str(cluster.get("server") or "http://localhost:8080"), _tls(cluster, user, files)
    )
    return Endpoint(
        host,
        port,
        base,
        tls,
        cluster.get("tls-server-name"),
        _auth(user, files),
        ctx.get("namespace") or "default",
    )


def in_cluster(account: Path | None = None) -> Endpoint | None:
    """The pod's service account (SERVICE_ACCOUNT), or None outside a pod."""
    account = account or Path(SERVICE_ACCOUNT)
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token, namespace = account / "token", account / "namespace"
    if not (host and port and token.is_file() and namespace.is_file()):
        return None
    tls = ssl.create_default_context(cafile=str(account / "ca.crt"))
    auth = TokenFileAuth(str(token))
    return Endpoint(host, int(port), "", tls, None, auth, namespace.read_text().strip())


def _env_kubeconfig() -> Path:
    listed = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return next((p for p in listed if p.is_file()), Path(DEFAULT_KUBECONFIG).expanduser())


def endpoint(kubeconfig: str | None, context: str | None = None) -> Endpoint:
    """The apiserver to talk to: `kubeconfig` file, else in-cluster, $KUBECONFIG or ~/.kube/config;
    `context` picks a kubeconfig context other than the current one (kubectl's --context)."""
    if kubeconfig:
        return from_kubeconfig(Path(kubeconfig).expanduser(), context)
    found = in_cluster()
    if found is not None:
        return found
    path = _env_kubeconfig()
    if not path.is_file():
        raise ConfigError(f"no usable Kubernetes configuration (no {path}, not in a cluster)")
    return from_kubeconfig(path, context)


def default_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """The namespace kubectl would use without -n: the context's, else "default" (in-cluster: the pod's)."""
    return endpoint(kubeconfig, context).namespace
