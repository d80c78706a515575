"""kopf wiring: thin handlers that hand the ClusterCSIDriver to the reconciler.

- resume/create/update: a pass right away (errors are retried by kopf with a short delay);
- a per-object daemon: a pass every `resync_seconds`, or soon after a child changes (drift repair,
  status refresh while the DaemonSet rolls out);
- event watchers on the children (server-side filtered by the operator's label): wake the daemon;
- delete: remove every child, then kopf releases the one finalizer. While application pods still
  use the driver, removal waits (retried every few seconds) unless the force-removal annotation is set;
- an event watcher on the ClusterCSIDriver wakes the daemon when that annotation appears (kopf
  ignores annotations under its own storage prefix, so no update handler would run).

The finalizer is a courtesy, not a dependency: every child has an ownerReference to the
(cluster-scoped) ClusterCSIDriver, so when the operator is gone and an admin releases the finalizer
by hand, the garbage collector removes the driver (docs/install-olm.md, "Uninstall").
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from sscsi_kube import KubeClient

from . import restart_daemon
from .kinds import (
    CHILD_KINDS,
    CLUSTER_CSI_DRIVER,
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    connect,
)
from .names import (
    ANNOTATION_PREFIX,
    FINALIZER,
    FORCE_REMOVAL_ANNOTATION,
    GROUP,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    OPERATOR_NAME,
    PLURAL,
    SINGLETON,
    VERSION,
)
from .reconcile import Reconciler, Trigger
from .settings import Settings

log = logging.getLogger(__name__)

RETRY_DELAY_SECONDS = 5
FINALIZE_POLL_SECONDS = 2
# Pods going away are not watched (that would be every pod in the cluster): polled instead.
WAITING_FOR_PODS_POLL_SECONDS = 5
# Watched for quick repair. Kinds a cluster may not serve (the monitoring CRDs; admission policies
# before Kubernetes 1.30) are repaired by the periodic pass alone.
UNWATCHED_KINDS = (
    SERVICE_MONITOR,
    PROMETHEUS_RULE,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
)
WATCHED_KINDS = tuple(kind for kind in CHILD_KINDS if kind not in UNWATCHED_KINDS)


def _is_singleton(name: str | None, **_: Any) -> bool:
    return name == SINGLETON


class _Runtime:
    """What lives as long as the operator: made at startup (inside the event loop), closed at cleanup."""

    def __init__(self, settings: Settings, kubeconfig: str | None) -> None:
        self.settings = settings
        self.kubeconfig = kubeconfig
        self._client: KubeClient | None = None
        self._reconciler: Reconciler | None = None

    async def start(self) -> None:
        self._client = connect(self.kubeconfig)
        self._reconciler = Reconciler(self._client, self.settings)
        # kopf only watches what exists at startup (scanning is off): fail loudly, not idly.
        if not await self._client.serves(CLUSTER_CSI_DRIVER):
            crd = f"{PLURAL}.{GROUP}"
            raise kopf.PermanentError(f"the {crd} CRD is not installed: the operator has nothing to serve")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @property
    def reconciler(self) -> Reconciler:
        if self._reconciler is None:
            raise RuntimeError("the operator has not started yet")
        return self._reconciler


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    persistence = settings.persistence
    persistence.finalizer = FINALIZER
    # Handler state in annotations: the CRD's status schema is strict and would prune kopf's fields.
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # The reconciler posts the Events (kopf would file those of a cluster-scoped object under a
    # namespace that `kubectl describe` does not look in).
    settings.posting.enabled = False
    # CRDs and namespaces are known at startup (OLM installs the CRDs first): no need to list them.
    settings.scanning.disabled = True
    settings.watching.field_selectors[GROUP, VERSION, PLURAL] = f"metadata.name={SINGLETON}"
    for kind in WATCHED_KINDS:
        settings.watching.label_selectors[kind.group, kind.version, kind.plural] = MANAGED_SELECTOR


def register(registry: kopf.OperatorRegistry, settings: Settings, kubeconfig: str | None = None) -> None:
    runtime = _Runtime(settings, kubeconfig)
    singleton: dict[str, Any] = {"when": _is_singleton, "backoff": RETRY_DELAY_SECONDS, "registry": registry}

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        await runtime.start()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same order as the reconciler's client: an explicit kubeconfig, in-cluster, $KUBECONFIG.
        if kubeconfig is None:
            return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.close()

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", **singleton)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", **singleton)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", **singleton)
    async def reconcile(body: kopf.Body, **_: Any) -> None:
        outcome = await runtime.reconciler.reconcile(body, trigger=Trigger.SPEC)
        if outcome.permanent:
            raise kopf.PermanentError(outcome.error)
        if not outcome.ok:
            raise kopf.TemporaryError(outcome.error, delay=RETRY_DELAY_SECONDS)

    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="resync",
        when=_is_singleton,
        cancellation_backoff=2.0,
        cancellation_timeout=5.0,
        registry=registry,
    )
    async def resync(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        reconciler = runtime.reconciler
        while not stopped:
            await reconciler.wait_for_wake(runtime.settings.resync_seconds, stopped.wait())
            if stopped:
                return
            try:
                await reconciler.reconcile(body, trigger=Trigger.RESYNC)
            except Exception:
                log.exception("Periodic reconcile failed; retrying at the next resync")

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="finalize", **singleton)
    async def finalize(body: kopf.Body, **_: Any) -> None:
        outcome = await runtime.reconciler.finalize(body)
        if outcome.ok:
            return
        if outcome.waiting_for:
            delay = WAITING_FOR_PODS_POLL_SECONDS
        else:
            delay = FINALIZE_POLL_SECONDS if outcome.pending else RETRY_DELAY_SECONDS
        raise kopf.TemporaryError(outcome.error, delay=delay)

    @kopf.on.event(
        GROUP,
        VERSION,
        PLURAL,
        id="force-removal",
        annotations={FORCE_REMOVAL_ANNOTATION: "true"},
        when=_is_singleton,
        registry=registry,
    )
    async def force_removal(type: str | None, **_: Any) -> None:
        if type is not None:
            runtime.reconciler.wake()

    async def child_changed(type: str | None, **_: Any) -> None:
        # type None: the initial listing at startup, which the resume handler already covers.
        if type is not None:
            runtime.reconciler.wake()

    # Rolling restarts of opted-in workloads when their mounted secrets rotate (sscsi_operator.restart).
    restart_daemon.register(registry, kubeconfig)

    for kind in WATCHED_KINDS:
        kopf.on.event(
            kind.group,
            kind.version,
            kind.plural,
            labels={MANAGED_BY_LABEL: OPERATOR_NAME},
            id=f"watch-{kind.plural}",
            registry=registry,
        )(child_changed)
