"""Secret sync: mirror mounted secrets into Kubernetes Secrets (a SecretProviderClass's `secretObjects`).

"Sync" here always means this mirroring (upstream's `--enable-secret-sync`, metric `sync_k8s_secret`).
Three modules, one job each:

- `secret_desired`: the Secret a secretObject asks for, merged into what the cluster has (pure);
- `secret_writer`: one pass over a volume's secretObjects, creating, updating or recreating each
  Secret the driver may write (`sync_ownership`); failures and refusals become events on the pod;
- this module, `SecretSyncer`: when passes run. The publisher calls `on_volume` after every
  successful mount and refresh; a failed pass is retried with exponential backoff (one pending
  retry per volume, dropped when the volume is unpublished); every synced volume is passed again
  every 5 minutes (upstream requeues as often), so a Secret deleted by hand comes back.

Reads come from node-filtered watch caches: the node's pods (`node_pods`) and SPCPS by the node label,
both started with the driver, and Secrets by the managed label, started on the first SPC with
secretObjects; so a refresh that changes nothing sends no request. A failure never fails the mount,
and the other Secrets of the SPC still sync. Secret contents never reach a log line or an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from sscsi_kube import EventRecorder, Informer, KubeClient
from sscsi_kube.resources import SECRET

from .metrics import Metrics
from .models import MANAGED_LABEL, SecretProviderClass
from .secret_writer import SecretWriter, who
from .sync_ownership import Lookup
from .volumes import VolumeState

log = logging.getLogger(__name__)


class SecretSyncer:
    """Creates and updates the Secrets of mounted volumes; register `on_volume` as a publisher listener."""

    def __init__(
        self,
        api: KubeClient,
        *,
        pods: Informer,
        spcps: Informer,
        events: EventRecorder,
        metrics: Metrics,
        is_mounted: Callable[[str], bool] = lambda target: True,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        attempt_timeout: float = 30.0,
        cache_timeout: float = 10.0,
        resync_interval: float = 300.0,
        lookup: Lookup | None = None,
        max_secret_objects: int = 1 << 20,
    ) -> None:
        self._api = api
        self._writer = SecretWriter(
            api, spcps=spcps, events=events, metrics=metrics, cache_timeout=cache_timeout, lookup=lookup
        )
        self._max_secret_objects = max_secret_objects
        self._is_mounted = is_mounted
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._attempt_timeout = attempt_timeout
        self._resync_interval = resync_interval
        self._pods = pods
        self._secrets: Informer | None = None
        self._failures: dict[str, int] = {}  # target -> consecutive failed attempts
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._volumes: dict[str, tuple[VolumeState, SecretProviderClass]] = {}  # targets that sync
        self._background: set[asyncio.Task[None]] = set()  # shielded attempts, the resync loop
        self._resync: asyncio.Task[None] | None = None

    # -- lifecycle --

    def _start_secrets(self) -> Informer:
        """Started on the first SPC with secretObjects, so nodes that never sync watch no Secrets."""
        if self._secrets is None:
            self._secrets = Informer(self._api, SECRET, labels={MANAGED_LABEL: "true"})
            self._secrets.start()
        return self._secrets

    async def stop(self) -> None:
        tasks = [*self._retries.values(), *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._retries.clear()
        self._resync = None
        if self._secrets is not None:
            await self._secrets.stop()
        self._secrets = None

    def forget(self, target: str) -> None:
        """The volume was unpublished: drop its pending retry. (The Secrets stay; GC removes them.)"""
        task = self._retries.pop(target, None)
        if task is not None:
            task.cancel()
        self._drop(target)

    def _drop(self, target: str) -> None:
        self._failures.pop(target, None)
        self._volumes.pop(target, None)
        self._writer.forget(target)

    @property
    def pending_retries(self) -> dict[str, int]:
        """target -> failed attempts so far, for volumes with a retry scheduled."""
        return {t: self._failures.get(t, 0) for t in self._retries}

    # -- entry points --

    async def on_volume(self, state: VolumeState, spc: SecretProviderClass) -> None:
        """Publisher listener: never raises, and sends no request when nothing changed."""
        task = self._retries.pop(state.target, None)
        if task is not None:
            task.cancel()
        if not spc.secret_objects:
            self._drop(state.target)
            return
        self._volumes[state.target] = (state, spc)
        if self._resync is None and self._resync_interval > 0:
            self._resync = self._spawn(self._resync_loop(), "secret-sync-resync")
        # Shielded: if kubelet gives up on the RPC, the sync still completes in the background.
        await asyncio.shield(self._spawn(self._attempt(state, spc), f"secret-sync {state.target}"))

    async def sync(self, state: VolumeState, spc: SecretProviderClass) -> bool:
        """One pass: make every Secret of `spc` match the volume's files; True when all of them do
        (or when retrying cannot help)."""
        if not spc.secret_objects:
            return True
        if len(spc.secret_objects) > self._max_secret_objects:
            self._writer.report(
                state,
                spc,
                "",
                f"{len(spc.secret_objects)} secretObjects, more than "
                f"--max-objects-per-volume={self._max_secret_objects}; none synced",
            )
            return True  # not transient: no retry until the SPC changes
        return await self._writer.write_volume(state, spc, self._pods, self._start_secrets())

    # -- retries and resync --

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _resync_loop(self) -> None:
        """Re-check every synced volume now and then (as upstream requeues after 5 minutes): a Secret
        deleted by hand comes back, lost owners are re-added. Free when nothing changed (caches)."""
        while True:
            await asyncio.sleep(self._resync_interval)
            for target, (state, spc) in list(self._volumes.items()):
                if target in self._retries:
                    continue  # a retry is already scheduled
                if await self._still_mounted(target):
                    await self._attempt(state, spc)

    async def _attempt(self, state: VolumeState, spc: SecretProviderClass) -> None:
        try:
            async with asyncio.timeout(self._attempt_timeout):
                ok = await self.sync(state, spc)
        except TimeoutError:
            log.warning(
                "secret sync timed out, will retry",
                extra={"pod": who(state.pod), "spc": spc.name, "timeout_s": self._attempt_timeout},
            )
            ok = False
        except Exception:
            log.exception("secret sync failed unexpectedly", extra={"pod": who(state.pod), "spc": spc.name})
            ok = False
        if ok:
            self._failures.pop(state.target, None)
        else:
            self._schedule_retry(state, spc)

    def _schedule_retry(self, state: VolumeState, spc: SecretProviderClass) -> None:
        failures = self._failures.get(state.target, 0)
        self._failures[state.target] = failures + 1
        delay = min(self._retry_initial * (2**failures), self._retry_max)
        task = asyncio.create_task(
            self._retry_after(delay, state, spc), name=f"secret-sync-retry {state.target}"
        )
        previous = self._retries.get(state.target)
        if previous is not None and previous is not asyncio.current_task():
            previous.cancel()  # one pending retry per volume
        self._retries[state.target] = task
        task.add_done_callback(lambda done: self._task_done(state.target, done))
        log.info(
            "secret sync will be retried",
            extra={"pod": who(state.pod), "spc": spc.name, "delay_s": delay, "attempt": failures + 1},
        )

    def _task_done(self, target: str, task: asyncio.Task[None]) -> None:
        if self._retries.get(target) is task:
            del self._retries[target]

    async def _retry_after(self, delay: float, state: VolumeState, spc: SecretProviderClass) -> None:
        # Stays in self._retries while it runs, so forget() and a new on_volume() can cancel it;
        # a failed attempt replaces the entry with the next retry.
        await asyncio.sleep(delay)
        if await self._still_mounted(state.target):
            await self._attempt(state, spc)

    async def _still_mounted(self, target: str) -> bool:
        """False once the volume was unpublished (forget() not called); its bookkeeping is dropped."""
        if self._is_mounted(target) and await asyncio.to_thread(os.path.isdir, target):
            return True
        self._drop(target)
        return False
