"""Watch-backed read caches (list + watch, relist on expiry), filtered so cost follows this node's pods."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping

from .client import KubeClient
from .errors import ApiError
from .resources import Obj, Resource, object_key

log = logging.getLogger(__name__)

Key = tuple[str, str]
Listener = Callable[[str, Obj], None]
Transform = Callable[[Obj], Obj]
key_of = object_key


class Informer:
    """A local mirror of the objects matching one selector, kept current by a watch."""

    def __init__(
        self,
        api: KubeClient,
        res: Resource,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        """`transform` (default: drop managedFields) shapes every object before it is stored or heard
        by listeners: keep only what the readers use, so memory follows what they need."""
        self._api = api
        self._res = res
        self._transform: Transform = transform or _slim
        self._namespace = namespace
        self._labels = dict(labels or {})
        self._fields = dict(fields or {})
        self._store: dict[Key, Obj] = {}
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self.relists = 0

    def __repr__(self) -> str:
        where = f"ns={self._namespace}, labels={self._labels}, fields={self._fields}"
        return f"Informer({self._res.plural}, {where})"

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=repr(self))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_synced(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._store.get((namespace, name))

    def items(self) -> list[Obj]:
        return list(self._store.values())

    def upsert_local(self, obj: Obj) -> None:
        """Record an object we just wrote, so reads right after our own write see it."""
        obj = self._transform(obj)
        current = self._store.get(key_of(obj))
        if current is None or _rv(obj) >= _rv(current):
            self._store[key_of(obj)] = obj

    def _notify(self, kind: str, obj: Obj) -> None:
        for listener in self._listeners:
            try:
                listener(kind, obj)
            except Exception:
                log.exception("cache listener failed", extra={"resource": self._res.plural})

    def _replace(self, fresh: dict[Key, Obj]) -> None:
        """The store becomes `fresh` (a list, or a watch's initial events); listeners hear what changed."""
        for gone in set(self._store) - set(fresh):
            self._notify("DELETED", self._store.pop(gone))
        for key, obj in fresh.items():
            if self._store.get(key) != obj:
                self._store[key] = obj
                self._notify("MODIFIED", obj)
        self.relists += 1
        self._synced.set()

    async def _list(self) -> str:
        doc = await self._api.list(self._res, self._namespace, labels=self._labels, fields=self._fields)
        self._replace({key_of(o): self._transform(o) for o in doc.get("items") or []})
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    async def _run(self) -> None:
        backoff = 0.5
        rv = ""
        while True:
            # Without a resourceVersion to resume from, the state is read again: streamed by the watch
            # itself where the apiserver can (one request), else a list before the watch.
            streaming = not rv and self._api.watch_list is not False
            initial: dict[Key, Obj] | None = {} if streaming else None
            try:
                if not rv and not streaming:
                    rv = await self._list()
                async for kind, obj in self._api.watch(
                    self._res,
                    self._namespace,
                    rv,
                    labels=self._labels,
                    fields=self._fields,
                    send_initial_events=streaming,
                ):
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind != "BOOKMARK":
                        obj = self._transform(obj)
                    if initial is not None:
                        if _initial_events_end(kind, obj):
                            self._api.watch_list = True
                            self._replace(initial)
                            initial = None
                        elif kind in ("ADDED", "MODIFIED"):
                            initial[key_of(obj)] = obj
                        elif kind == "DELETED":
                            initial.pop(key_of(obj), None)
                        continue
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        self._store.pop(key_of(obj), None)
                    else:
                        self._store[key_of(obj)] = obj
                    self._notify(kind, obj)
                if initial is not None:
                    rv = ""  # closed before the initial state was complete: read it again
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if streaming and initial == {} and err.status in (400, 422) and self._api.watch_list is None:
                    self._api.watch_list = False  # no WatchList on this apiserver: list, then watch
                    rv = ""
                    continue
                if err.gone:
                    rv = ""  # our resourceVersion expired: relist
                    continue
                log.warning("watch failed", extra={"resource": self._res.plural, "error": str(err)})
                rv = ""
                await asyncio.sleep(backoff + random.random() * backoff)  # noqa: S311 - jitter only
                backoff = min(backoff * 2, 30.0)
            except Exception as err:  # connection loss, apiserver restart
                log.warning("watch interrupted", extra={"resource": self._res.plural, "error": repr(err)})
                rv = ""
                await asyncio.sleep(backoff + random.random() * backoff)  # noqa: S311 - jitter only
                backoff = min(backoff * 2, 30.0)


def _slim(obj: Obj) -> Obj:
    """The object without metadata.managedFields: apply bookkeeping no reader of a cache uses (a third of
    an SPCPS's size); an update sent without it leaves the apiserver's as it was."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _initial_events_end(kind: str, obj: Obj) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return kind == "BOOKMARK" and annotations.get("k8s.io/initial-events-end") == "true"


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class NamespacedCache:
    """Per-namespace informers started on first use and stopped when no volume needs them.

    SecretProviderClasses cannot be filtered by node, so instead of mirroring every
    SPC in the cluster we watch only the namespaces of pods mounted on this node.
    """

    def __init__(self, api: KubeClient, res: Resource, idle_seconds: float = 120.0) -> None:
        self._api = api
        self._res = res
        self._idle = idle_seconds
        self._informers: dict[str, Informer] = {}
        self._refs: dict[str, int] = {}
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # referenced until done (asyncio keeps weak refs)

    def _informer(self, namespace: str) -> Informer:
        informer = self._informers.get(namespace)
        if informer is None:
            informer = Informer(self._api, self._res, namespace=namespace)
            self._informers[namespace] = informer
            informer.start()
        timer = self._idle_timers.pop(namespace, None)
        if timer is not None:
            timer.cancel()
        return informer

    async def get(self, namespace: str, name: str) -> Obj:
        """Return the object; raises ApiError(404) when it does not exist.

        The first read in a namespace waits for its informer's first state: one request where the
        apiserver streams it with the watch (a direct read next to it would cost a request and a
        connection more, measured slower for a node's first publishes), a list otherwise.
        """
        informer = self._informer(namespace)
        try:
            await informer.wait_synced(10.0)
            obj = informer.get(namespace, name)
        except TimeoutError:
            obj = None
        if obj is None:
            # Cache miss: the object may be newer than our watch. Ask once.
            obj = await self._api.get(self._res, name, namespace)
        self._schedule_idle(namespace)
        return obj

    def warm(self, namespace: str) -> None:
        """Start the namespace's informer ahead of its first read (a pod bound to this node will
        mount); it stops after the idle delay unless a volume acquires it meanwhile."""
        self._informer(namespace)
        self._schedule_idle(namespace)

    def acquire(self, namespace: str) -> None:
        self._refs[namespace] = self._refs.get(namespace, 0) + 1
        self._informer(namespace)

    def release(self, namespace: str) -> None:
        left = self._refs.get(namespace, 0) - 1
        if left > 0:
            self._refs[namespace] = left
            return
        self._refs.pop(namespace, None)
        self._schedule_idle(namespace)

    def _schedule_idle(self, namespace: str) -> None:
        if self._refs.get(namespace) or namespace in self._idle_timers or namespace not in self._informers:
            return
        loop = asyncio.get_running_loop()
        self._idle_timers[namespace] = loop.call_later(self._idle, self._start_stop_idle, namespace)

    def _start_stop_idle(self, namespace: str) -> None:
        task = asyncio.create_task(self._stop_idle(namespace), name=f"stop idle informer {namespace}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_idle(self, namespace: str) -> None:
        self._idle_timers.pop(namespace, None)
        if self._refs.get(namespace):
            return
        informer = self._informers.pop(namespace, None)
        if informer is not None:
            await informer.stop()

    @property
    def namespaces(self) -> list[str]:
        return sorted(self._informers)

    async def stop(self) -> None:
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()
        for informer in self._informers.values():
            await informer.stop()
        self._informers.clear()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
