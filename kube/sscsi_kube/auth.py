"""Who we are to the apiserver: the Authorization header of each request, and what to do on a 401.

A service account token file is rotated by the kubelet: it is read again once a minute (as client-go
does) and at once when the apiserver answers 401. An exec plugin (client.authentication.k8s.io, e.g.
a cloud's `get-token` command) runs when its token is missing or expired, and again on a 401.
Client certificates are not here: they belong to the TLS context (config.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TOKEN_FILE_PERIOD = 60.0
EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
)


class ConfigError(Exception):
    """The configuration names credentials we cannot use."""


class Auth:
    """No credentials (e.g. client certificates only)."""

    async def header(self) -> str | None:
        """The Authorization header value for the next request, or None."""
        return None

    async def rejected(self) -> bool:
        """The apiserver answered 401: renew what can be renewed; True when a retry may now pass."""
        return False


class StaticAuth(Auth):
    """A bearer token or basic credentials written in the kubeconfig."""

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def bearer(cls, token: str) -> StaticAuth:
        return cls(f"Bearer {token.strip()}")

    @classmethod
    def basic(cls, username: str, password: str) -> StaticAuth:
        pair = base64.b64encode(f"{username}:{password}".encode()).decode()
        return cls(f"Basic {pair}")

    async def header(self) -> str | None:
        return self._value


class TokenFileAuth(Auth):
    """A bearer token read from a file the kubelet rotates (in-cluster, or `tokenFile` in a kubeconfig)."""

    def __init__(self, path: str, period: float = TOKEN_FILE_PERIOD) -> None:
        self._path = Path(path)
        self._period = period
        self._token = ""
        self._read_at = float("-inf")

    def _read(self) -> str:
        try:
            token = self._path.read_text().strip()
        except OSError as err:
            raise ConfigError(f"token file {self._path}: {err.strerror}") from err
        self._read_at = time.monotonic()
        return token

    async def header(self) -> str | None:
        if time.monotonic() - self._read_at >= self._period:
            self._token = self._read()
        return f"Bearer {self._token}"

    async def rejected(self) -> bool:
        previous, self._token = self._token, self._read()
        return self._token != previous


def exec_command(spec: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The exec plugin's command line and environment, checked."""
    api_version = str(spec.get("apiVersion", ""))
    if api_version not in EXEC_API_VERSIONS:
        raise ConfigError(f"exec plugin apiVersion {api_version!r} is not supported")
    command = spec.get("command")
    if not command:
        raise ConfigError("exec plugin without a command")
    env = dict(os.environ)
    env.update({str(e["name"]): str(e["value"]) for e in spec.get("env") or []})
    info = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    return [str(command), *map(str, spec.get("args") or [])], env


def _expiry(status: Mapping[str, Any]) -> float:
    """When the credential expires, on the monotonic clock (inf when it does not say)."""
    stamp = status.get("expirationTimestamp")
    if not stamp:
        return float("inf")
    at = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return time.monotonic() + (at - datetime.now(UTC)).total_seconds()


class ExecAuth(Auth):
    """A bearer token from an exec credential plugin, renewed when it expires or is refused."""

    MARGIN = 10.0  # renew this long before the stated expiry

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._command, self._env = exec_command(spec)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def _run(self) -> None:
        output = await _check_output(self._command, self._env)
        try:
            status = json.loads(output)["status"]
            token = status["token"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"exec plugin {self._command[0]} gave no token (client certificates unsupported)"
            ) from err
        self._token = str(token)
        self._expires = _expiry(status)

    async def header(self) -> str | None:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires - self.MARGIN:
                await self._run()
        return f"Bearer {self._token}"

    async def rejected(self) -> bool:
        async with self._lock:
            await self._run()
        return True


async def _check_output(command: Sequence[str], env: Mapping[str, str]) -> bytes:
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        raise ConfigError(f"exec plugin {command[0]}: {err.strerror}") from err
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip()[:300]
        raise ConfigError(f"exec plugin {command[0]} exited with {process.returncode}: {message}")
    return stdout
