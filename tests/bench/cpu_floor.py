"""CPU floors: what grpcio's asyncio server and client cost a Python node plugin per call, before our code.

A republish pass is N NodePublishVolume calls; inside the rotation interval each is answered at once, and a
refresh also makes one provider Mount call. The probe runs, in a fresh interpreter (the driver's), a bare
`grpc.aio` server whose handler returns at once ("server": the floor of the throttled pass) or first awaits
one unary call to a second process ("server+client": the gRPC floor of a pass that asks the provider), and
reports the CPU seconds that process spent answering N concurrent calls (utime + stime, /proc/<pid>/stat)
and the wall time the N calls took, seen from the calling process (a Python grpc.aio client, like the
bench's load generator). `kube_cpu_seconds` is the same for N apiserver GETs through sscsi_kube's client
(a changed republish pass sends two requests per volume, as upstream does). `round_floors` is what the
bench measures at the start of every round: both modes for the round's N calls, and one GET's CPU.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_PROBE = r"""
import asyncio, os, sys
import grpc
from sscsi_proto import csi_pb2, csi_pb2_grpc

mode, sock, upstream, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class Identity(csi_pb2_grpc.IdentityServicer):
    def __init__(self, stub):
        self.stub = stub

    async def GetPluginInfo(self, request, context):
        if self.stub is not None:
            await self.stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=30)
        return csi_pb2.GetPluginInfoResponse(name="floor")


def cpu():
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main():
    stub = None
    if mode == "server+client":
        stub = csi_pb2_grpc.IdentityStub(grpc.aio.insecure_channel(f"unix:{upstream}"))
    server = grpc.aio.server()
    csi_pb2_grpc.add_IdentityServicer_to_server(Identity(stub), server)
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        client = csi_pb2_grpc.IdentityStub(channel)
        await asyncio.gather(*(client.GetPluginInfo(csi_pb2.GetPluginInfoRequest()) for _ in range(calls)))
    server_cpu, wall = await measured(sock, calls)
    print(server_cpu, wall)
    await server.stop(0)


async def measured(sock, calls):
    # The calls come from a child process, so only the server's side is counted here.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, sock, str(calls), stdout=asyncio.subprocess.PIPE
    )
    await child.stdout.readline()  # the child's channel is ready
    before = cpu()
    out, _ = await child.communicate()
    return cpu() - before, float(out.split()[-1])


CLIENT = '''
import asyncio, sys, time
import grpc
from sscsi_proto import csi_pb2, csi_pb2_grpc
async def main():
    async with grpc.aio.insecure_channel(f"unix:{sys.argv[1]}") as channel:
        await channel.channel_ready()
        stub = csi_pb2_grpc.IdentityStub(channel)
        print("ready", flush=True)
        await asyncio.sleep(0.5)
        requests = [csi_pb2.GetPluginInfoRequest() for _ in range(int(sys.argv[2]))]
        started = time.monotonic()
        await asyncio.gather(*(stub.GetPluginInfo(r) for r in requests))
        print(time.monotonic() - started, flush=True)
asyncio.run(main())
'''

asyncio.run(main())
"""

_UPSTREAM = r"""
import sys
from concurrent import futures
import grpc
from sscsi_proto import csi_pb2, csi_pb2_grpc


class Identity(csi_pb2_grpc.IdentityServicer):
    def GetPluginInfo(self, request, context):
        return csi_pb2.GetPluginInfoResponse(name="upstream")


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
csi_pb2_grpc.add_IdentityServicer_to_server(Identity(), server)
server.add_insecure_port(f"unix:{sys.argv[1]}")
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""

MODES = ("server", "server+client")

_KUBE = r"""
import asyncio, os, sys
from sscsi_kube import KubeClient
from sscsi_kube.resources import Resource

NAMESPACE = Resource("", "v1", "namespaces", "Namespace", namespaced=False)


async def main():
    api = KubeClient.from_config(sys.argv[1], "secrets-store-csi-py/cpu-floor")
    await asyncio.gather(*(api.get(NAMESPACE, "default") for _ in range(32)))  # connections open
    before = os.times()
    await asyncio.gather(*(api.get(NAMESPACE, "default") for _ in range(int(sys.argv[2]))))
    after = os.times()
    print(after.user - before.user + after.system - before.system)
    await api.close()


asyncio.run(main())
"""


def grpc_seconds(python: str, mode: str, calls: int = 110, timeout: float = 120.0) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of a fresh `python` serving `calls` concurrent trivial unary calls
    (see module doc)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    with tempfile.TemporaryDirectory(prefix="sscsi-cpu-floor-") as tmp:
        sock, upstream_sock = Path(tmp) / "probe.sock", Path(tmp) / "upstream.sock"
        helper = subprocess.Popen(
            [python, "-c", _UPSTREAM, str(upstream_sock)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert helper.stdout is not None
            helper.stdout.readline()
            out = subprocess.run(
                [python, "-c", _PROBE, mode, str(sock), str(upstream_sock), str(calls)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        finally:
            helper.terminate()
            helper.wait(timeout=10)
    cpu, wall = out.stdout.strip().splitlines()[-1].split()
    return float(cpu), float(wall)


def grpc_cpu_seconds(python: str, mode: str, calls: int = 110, timeout: float = 120.0) -> float:
    """The CPU seconds of `grpc_seconds`."""
    return grpc_seconds(python, mode, calls, timeout)[0]


def kube_cpu_seconds(python: str, kubeconfig: str, requests: int = 220, timeout: float = 120.0) -> float:
    """CPU seconds a fresh `python` spends on `requests` concurrent GETs through sscsi_kube's client (TLS,
    keep-alive connections already open): what each apiserver request of a pass costs our driver at least."""
    out = subprocess.run(
        [python, "-c", _KUBE, kubeconfig, str(requests)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def cpu_floors(python: str, calls: int = 110, repeats: int = 3) -> dict[str, float]:
    """Per mode, the median CPU seconds of `repeats` fresh probes (keys as MODES)."""
    return {
        mode: round(statistics.median(grpc_cpu_seconds(python, mode, calls) for _ in range(repeats)), 3)
        for mode in MODES
    }


KUBE_REQUEST_MS = "kube_request_cpu_ms"


def round_floors(
    python: str, kubeconfig: str, calls: int, repeats: int = 3, requests: int = 220
) -> dict[str, float]:
    """One round's CPU floors: per mode the median over `repeats` probes of its CPU and wall seconds for
    `calls` calls ("<mode>_cpu_s", "<mode>_wall_s"), `calls` itself, and the CPU milliseconds of one
    apiserver GET through sscsi_kube's client (KUBE_REQUEST_MS, from `requests` GETs at once)."""
    out: dict[str, float] = {"calls": float(calls)}
    for mode in MODES:
        samples = [grpc_seconds(python, mode, calls) for _ in range(repeats)]
        out[f"{mode}_cpu_s"] = round(statistics.median(c for c, _ in samples), 3)
        out[f"{mode}_wall_s"] = round(statistics.median(w for _, w in samples), 3)
    out[KUBE_REQUEST_MS] = round(kube_cpu_seconds(python, kubeconfig, requests) * 1000 / requests, 3)
    return out


if __name__ == "__main__":  # pragma: no cover - manual use
    import json

    print(json.dumps(cpu_floors(sys.argv[1] if len(sys.argv) > 1 else sys.executable), indent=2))
