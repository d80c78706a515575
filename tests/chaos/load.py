"""The load: SecretProviderClasses that stamp every few seconds, and pods created and deleted all the time.

Three SPCs use the reference provider with `stampPeriodSeconds` and a random `stampSalt`: `chaos-plain`
(two objects, no sync), `chaos-sync-b` and `chaos-sync-c` (one object each, synced to the Secrets
`chaos-b` / `chaos-c`). Pods are bare busybox pods with one volume of one of them, or two volumes
(`chaos-plain` and `chaos-sync-c`). `Churn` creates a pod every `create_every` seconds (jittered) and
deletes the oldest beyond `pool`; it survives an unreachable apiserver (recorded, retried next tick).
`Registry` is what the checks know about every pod the run made, thread-safe.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from node.nodekit import Kube, app_pod_spec, spc
from sscsi_kube import ApiError
from sscsi_kube.resources import POD

from .history import History

STAMP_PERIOD_SECONDS = 3
MOUNT_ROOT = "/mnt/secrets"


@dataclass(frozen=True, slots=True)
class SpcSpec:
    name: str
    objects: tuple[str, ...]
    salt: str
    secret: str | None = None  # the synced Secret's name (key = object name)

    def manifest(self) -> dict[str, Any]:
        secret_objects = None
        if self.secret:
            data = [{"objectName": o, "key": o} for o in self.objects]
            secret_objects = [{"secretName": self.secret, "type": "Opaque", "data": data}]
        doc = spc(self.name, objects=self.objects, secret_objects=secret_objects)
        doc["spec"]["parameters"].update(
            {"stampPeriodSeconds": str(STAMP_PERIOD_SECONDS), "stampSalt": self.salt}
        )
        return doc


def spc_specs() -> dict[str, SpcSpec]:
    specs = (
        SpcSpec("chaos-plain", ("alpha", "beta"), secrets.token_hex(8)),
        SpcSpec("chaos-sync-b", ("bravo",), secrets.token_hex(8), secret="chaos-b"),
        SpcSpec("chaos-sync-c", ("charlie",), secrets.token_hex(8), secret="chaos-c"),
    )
    return {s.name: s for s in specs}


# volume name -> SPC name, per pod layout
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "plain": (("plain", "chaos-plain"),),
    "syncb": (("syncb", "chaos-sync-b"),),
    "syncc": (("syncc", "chaos-sync-c"),),
    "two": (("plain", "chaos-plain"), ("syncc", "chaos-sync-c")),
}


@dataclass
class TrackedPod:
    name: str
    uid: str
    volumes: tuple[tuple[str, str], ...]  # (volume, SPC)
    created: float  # run seconds
    ready: float | None = None
    deleted: float | None = None  # when the run asked for its deletion
    gone: float | None = None  # when it was first seen absent from the API


@dataclass
class Registry:
    namespace: str
    specs: dict[str, SpcSpec]
    pods: dict[str, TrackedPod] = field(default_factory=dict)  # by uid
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, pod: TrackedPod) -> None:
        with self._lock:
            self.pods[pod.uid] = pod

    def snapshot(self) -> list[TrackedPod]:
        with self._lock:
            return list(self.pods.values())

    def by_name(self, name: str) -> list[TrackedPod]:
        with self._lock:
            return [p for p in self.pods.values() if p.name == name]


class Churn:
    """Pods created and deleted continuously, in a thread of its own (its own Kube client)."""

    def __init__(
        self,
        kube: Kube,
        registry: Registry,
        history: History,
        rng: random.Random,
        pool: int,
        create_every: float,
    ) -> None:
        self._kube = kube
        self._registry = registry
        self._history = history
        self._rng = rng
        self._pool = pool
        self._every = create_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-churn", daemon=True)
        self._serial = 0
        self.created = 0
        self.deleted = 0

    def setup(self) -> None:
        ns = self._registry.namespace
        self._kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for spec in self._registry.specs.values():
            self._kube.apply(spec.manifest(), ns)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._create()
                self._trim(self._pool)
            except (ApiError, AssertionError, OSError) as err:  # apiserver down: try again next tick
                self._history.record("load-error", error=str(err)[:300])
            self._stop.wait(self._rng.uniform(0.5, 1.5) * self._every)

    def _create(self) -> None:
        layout = self._rng.choice(sorted(LAYOUTS))
        self._serial += 1
        name = f"chaos-{layout}-{self._serial:05d}"
        volumes = LAYOUTS[layout]
        spec = app_pod_spec([(vol, spc_name, f"{MOUNT_ROOT}/{vol}") for vol, spc_name in volumes])
        # Not 0: a pod deleted with grace 0 leaves the API at once, before kubelet unmounts its volumes;
        # with 1 it stays until kubelet has torn them down, so a tmpfs without its pod is a leak.
        spec["terminationGracePeriodSeconds"] = 1
        manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        ns = self._registry.namespace
        created = self._kube.api.run(self._kube.api.client.create(POD, manifest, ns))
        uid = str(created["metadata"]["uid"])
        self._registry.add(TrackedPod(name, uid, volumes, self._history.now()))
        self.created += 1
        self._history.record("pod-create", pod=name, uid=uid, layout=layout)

    def _trim(self, keep: int) -> None:
        live = sorted(
            (p for p in self._registry.snapshot() if p.deleted is None), key=lambda p: (p.created, p.name)
        )
        for pod in live[: max(0, len(live) - keep)]:
            self.delete(pod)

    def delete(self, pod: TrackedPod) -> None:
        pod.deleted = self._history.now()  # first: the checks stop expecting its files from now on
        try:
            self._kube.delete("pod", pod.name, self._registry.namespace, wait=False)
        except BaseException:
            pod.deleted = None
            raise
        self.deleted += 1
        self._history.record("pod-delete", pod=pod.name, uid=pod.uid)

    def delete_all(self) -> None:
        """Every pod of the run asked to go (the end of a run: what is left must then be cleaned up)."""
        for pod in self._registry.snapshot():
            if pod.deleted is None:
                for _ in range(30):
                    try:
                        self.delete(pod)
                        break
                    except (ApiError, AssertionError, OSError):
                        time.sleep(2)
