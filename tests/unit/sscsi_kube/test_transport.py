"""The HTTP/1.1 transport against a real local HTTPS server: TLS client certificates, keep-alive,
chunked and gzip bodies, watches split across chunks, stale connections, tokens renewed on 401, and
every failure one ApiError."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from sscsi_kube import ApiError, KubeClient, client
from sscsi_kube.resources import POD, SECRET

from unit.sscsi_kube.tls_kit import Pki, Seen, Server, answer, chunked, make_pki, server_tls

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def kubeconfig(path: Path, server: str, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(doc))
    return str(path)


def cert_user(pki: Pki) -> dict[str, Any]:
    return {"client-certificate": str(pki.client_cert), "client-key": str(pki.client_key)}


async def ok(seen: Seen) -> bytes:
    return answer(200, json.dumps({"metadata": {"name": seen.target}}).encode(), JSON)


async def test_tls_client_certificate_keep_alive_and_request_shape(pki: Pki, tmp_path: Path) -> None:
    async with Server(ok, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url, cert_user(pki), {"certificate-authority": str(pki.ca)}
        )
        api = KubeClient.from_config(config, "sscsi-test/1")
        for _ in range(5):
            got = await api.get(SECRET, "s", "ns")
            assert got["metadata"]["name"] == "/api/v1/namespaces/ns/secrets/s"
        await api.create(SECRET, {"metadata": {"name": "s"}}, "ns")
        await api.close()
    assert server.connections == 1, "sequential requests share one keep-alive connection"
    assert {s.client_cn for s in server.seen} == {"tester"}
    post = server.seen[-1]
    assert post.method == "POST" and json.loads(post.body) == {"metadata": {"name": "s"}}
    assert post.headers["content-type"] == "application/json"
    assert post.headers["user-agent"] == "sscsi-test/1" and post.headers["host"] == f"127.0.0.1:{server.port}"


async def test_certificates_given_as_data_and_a_server_path_prefix(pki: Pki, tmp_path: Path) -> None:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    user = {"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)}
    async with Server(ok, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url + "/k8s/c1/", user, {"certificate-authority-data": b64(pki.ca)}
        )
        api = KubeClient.from_config(config, "t")
        listed = await api.list(POD, "ns", labels={"app": "a b"})
        await api.close()
    assert listed["metadata"]["name"] == "/k8s/c1/api/v1/namespaces/ns/pods?labelSelector=app%3Da+b"
    assert server.seen[0].client_cn == "tester"


async def test_an_untrusted_server_is_unreachable(pki: Pki, tmp_path: Path) -> None:
    async with Server(ok, server_tls(pki, require_client_cert=False)) as server:
        api = KubeClient.from_config(kubeconfig(tmp_path / "kc", server.url, {"token": "t"}), "t")
        with pytest.raises(ApiError) as raised:
            await api.get(SECRET, "s", "ns")  # the system trust store does not know our test CA
        await api.close()
    assert raised.value.status == 503 and "CERTIFICATE_VERIFY_FAILED" in raised.value.message


async def test_chunked_and_gzip_bodies_and_a_watch_split_across_chunks(pki: Pki, tmp_path: Path) -> None:
    events = [
        {"type": "ADDED", "object": {"metadata": {"name": f"p{i}", "resourceVersion": str(i)}}}
        for i in range(3)
    ]
    stream = b"".join(json.dumps(e).encode() + b"\n" for e in events)

    async def serve(seen: Seen) -> bytes:
        if "watch=true" in seen.target:
            cut = [stream[:7], stream[7:90], stream[90:91], stream[91:]]  # lines split anywhere
            return answer(200, chunked(cut), {"Transfer-Encoding": "chunked"}) + b"junk after the watch"
        if seen.target.endswith("/pods"):
            body = gzip.compress(json.dumps({"items": [{"n": 1}] * 500}).encode())
            return answer(200, body, {"Content-Encoding": "gzip"})
        return answer(200, chunked([b'{"kind":', b'"Secret"}']), {"Transfer-Encoding": "chunked"})

    async with Server(serve, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url, cert_user(pki), {"certificate-authority": str(pki.ca)}
        )
        api = KubeClient.from_config(config, "t")
        assert await api.get(SECRET, "s", "ns") == {"kind": "Secret"}
        assert len((await api.list(POD, "ns"))["items"]) == 500
        seen = [(kind, obj["metadata"]["name"]) async for kind, obj in api.watch(POD, "ns", "1")]
        await api.close()
    assert seen == [("ADDED", "p0"), ("ADDED", "p1"), ("ADDED", "p2")]
    assert server.seen[0].headers["accept-encoding"] == "gzip"


async def test_a_connection_the_server_closed_is_replaced(pki: Pki, tmp_path: Path) -> None:
    answered: list[int] = []

    async def serve(seen: Seen) -> bytes | None:
        if seen.connection == 1 and len(answered) == 1:
            return None  # read the second request, then close without answering: an idle-close race
        answered.append(seen.connection)
        return await ok(seen)

    async with Server(serve, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url, cert_user(pki), {"certificate-authority": str(pki.ca)}
        )
        api = KubeClient.from_config(config, "t")
        await api.get(SECRET, "a", "ns")
        await api.get(SECRET, "b", "ns")
        await api.close()
    assert answered == [1, 2]
    assert [s.target.rsplit("/", 1)[1] for s in server.seen] == ["a", "b", "b"]


async def test_errors_are_api_errors(pki: Pki, tmp_path: Path) -> None:
    async def serve(seen: Seen) -> bytes | None:
        name = seen.target.rsplit("/", 1)[1]
        if name == "missing":
            status = {
                "kind": "Status",
                "code": 404,
                "reason": "NotFound",
                "message": 'secrets "missing" not found',
            }
            return answer(404, json.dumps(status).encode(), JSON)
        if name == "html":
            return answer(502, b"<html>bad gateway</html>")
        if name == "garbage":
            return b"SSH-2.0-OpenSSH\r\n\r\n"
        await asyncio.sleep(1)  # "slow": does not answer in time
        return None

    async with Server(serve, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url, cert_user(pki), {"certificate-authority": str(pki.ca)}
        )
        api = KubeClient.from_config(config, "t", timeout=0.5)
        assert await api.find(SECRET, "missing", "ns") is None
        with pytest.raises(ApiError) as html:
            await api.get(SECRET, "html", "ns")
        assert html.value.status == 502 and "bad gateway" in html.value.message
        for name in ("garbage", "slow"):
            with pytest.raises(ApiError) as raised:
                await api.get(SECRET, name, "ns")
            assert raised.value.status == 503 and raised.value.unavailable, name
        await api.close()
        await asyncio.sleep(0.6)  # the slow handler ends before its server closes


async def test_an_unreachable_apiserver_is_503(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again at once: nobody listens there
    api = KubeClient.from_config(kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}", {}), "t")
    with pytest.raises(ApiError) as raised:
        await api.get(SECRET, "s", "ns")
    assert raised.value.unavailable and "apiserver unreachable" in raised.value.message
    await api.close()


class Tokens:
    """The server accepts only `current`; 401 otherwise."""

    def __init__(self, current: str) -> None:
        self.current = current

    async def __call__(self, seen: Seen) -> bytes:
        if seen.headers.get("authorization") != f"Bearer {self.current}":
            status = {"kind": "Status", "code": 401, "reason": "Unauthorized", "message": "Unauthorized"}
            return answer(401, json.dumps(status).encode(), JSON)
        return await ok(seen)


async def test_a_rotated_token_file_is_read_again_on_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    tokens = Tokens("first")
    async with Server(tokens, None) as server:
        api = KubeClient.from_config(kubeconfig(tmp_path / "kc", server.url, {"tokenFile": str(token)}), "t")
        await api.get(SECRET, "a", "ns")
        token.write_text("second\n")  # the kubelet rotated it
        tokens.current = "second"
        await api.get(SECRET, "b", "ns")
        tokens.current = "third"  # revoked, and the file still says "second": the 401 comes through
        with pytest.raises(ApiError) as raised:
            await api.get(SECRET, "c", "ns")
        await api.close()
    assert raised.value.status == 401
    assert [s.headers["authorization"] for s in server.seen] == [
        "Bearer first",
        "Bearer first",  # 401: the file is read again
        "Bearer second",
        "Bearer second",  # 401: the file still says "second", nothing to retry with
    ]


def _plugin(tmp_path: Path) -> Path:
    """An exec credential plugin handing out token-<n> where n counts its runs."""
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, pathlib, sys\n"
        f"count = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "n = int(count.read_text()) + 1 if count.exists() else 1\n"
        "count.write_text(str(n))\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "status = {'token': f\"{os.environ['PREFIX']}-{n}\"}\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential', 'status': status}))\n"
    )
    return script


async def test_an_exec_plugin_token_is_used_and_renewed_on_401(tmp_path: Path) -> None:
    exec_spec = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": [str(_plugin(tmp_path))],
        "env": [{"name": "PREFIX", "value": "token"}],
    }
    tokens = Tokens("token-1")
    async with Server(tokens, None) as server:
        api = KubeClient.from_config(kubeconfig(tmp_path / "kc", server.url, {"exec": exec_spec}), "t")
        await api.get(SECRET, "a", "ns")
        await api.get(SECRET, "b", "ns")  # cached: the plugin does not run again
        tokens.current = "token-2"
        await api.get(SECRET, "c", "ns")  # 401, the plugin runs again, the retry passes
        await api.close()
    assert (tmp_path / "runs").read_text() == "2"
    assert [s.headers["authorization"] for s in server.seen][-2:] == ["Bearer token-1", "Bearer token-2"]


async def test_large_answers_arrive_whole_through_the_smaller_tls_read_buffer(
    pki: Pki, tmp_path: Path
) -> None:
    items = [{"metadata": {"name": f"p{i}"}, "data": "x" * 1000} for i in range(1500)]  # ~1.5 MiB
    document = json.dumps({"items": items}).encode()

    async def serve(seen: Seen) -> bytes:
        if seen.target.endswith("/pods"):
            return answer(200, document, JSON)
        parts = [document[i : i + 70_000] for i in range(0, len(document), 70_000)]
        return answer(200, chunked(parts), {"Transfer-Encoding": "chunked"})

    async with Server(serve, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url, cert_user(pki), {"certificate-authority": str(pki.ca)}
        )
        api = KubeClient.from_config(config, "t")
        assert (await api.list(POD, "ns"))["items"] == items
        assert (await api.get(SECRET, "s", "ns"))["items"] == items
        await api.close()
    assert server.connections == 1


async def test_a_burst_shares_a_few_connections_and_watches_are_not_counted(pki: Pki, tmp_path: Path) -> None:
    busy = {"now": 0, "most": 0}
    done, watching = asyncio.Event(), asyncio.Event()

    async def serve(seen: Seen) -> bytes | None:
        if "watch=" in seen.target:
            if len(server.seen) == 8:
                watching.set()
            await done.wait()  # a watch: its connection stays taken until the test ends
            return None
        busy["now"] += 1
        busy["most"] = max(busy["most"], busy["now"])
        await asyncio.sleep(0.02)
        busy["now"] -= 1
        return await ok(seen)

    async with Server(serve, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url, cert_user(pki), {"certificate-authority": str(pki.ca)}
        )
        api = KubeClient.from_config(config, "t")

        async def first_event(namespace: str) -> None:
            async for _ in api.watch(POD, namespace, "1"):
                return

        watches = [asyncio.create_task(first_event(f"ns{i}")) for i in range(8)]
        await watching.wait()  # eight watches hold eight connections and no request slot
        names = [f"s{i}" for i in range(30)]
        got = await asyncio.gather(*(api.get(SECRET, name, "ns") for name in names))
        done.set()
        await asyncio.gather(*watches, return_exceptions=True)
        await api.close()
    assert [g["metadata"]["name"].rsplit("/", 1)[1] for g in got] == names
    assert busy["most"] == client.MAX_IN_FLIGHT
    assert server.connections == 8 + client.MAX_IN_FLIGHT, "30 requests on MAX_IN_FLIGHT connections"


async def test_waiting_for_a_request_slot_is_bounded_by_the_timeout(pki: Pki, tmp_path: Path) -> None:
    async def serve(seen: Seen) -> bytes | None:
        await asyncio.sleep(2)  # never answers in time
        return None

    async with Server(serve, server_tls(pki)) as server:
        config = kubeconfig(
            tmp_path / "kc", server.url, cert_user(pki), {"certificate-authority": str(pki.ca)}
        )
        api = KubeClient.from_config(config, "t", timeout=0.3)
        results = await asyncio.gather(
            *(api.get(SECRET, f"s{i}", "ns") for i in range(client.MAX_IN_FLIGHT + 2)),
            return_exceptions=True,
        )
        await api.close()
        await asyncio.sleep(2)  # the handlers end before their server closes
    assert all(isinstance(r, ApiError) and r.status == 503 for r in results)
    messages = {r.message.split(":")[0] for r in results if isinstance(r, ApiError)}
    assert messages == {"apiserver unreachable", "apiserver"}, "timed out answers and slots alike"
