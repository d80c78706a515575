"""kopf wiring of restart on rotation: a daemon on the ClusterCSIDriver singleton.

kopf runs a daemon only on the active peer and stops it when the ClusterCSIDriver goes away; its
`body` is a live view, so an edit of `spec.driverConfig.secretsStore.restartOnRotation` (or of the
rotation settings) applies without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from .kinds import connect
from .names import GROUP, PLURAL, SINGLETON, VERSION
from .restart import RestartConfig, RestartController


def register(registry: kopf.OperatorRegistry, kubeconfig: str | None = None) -> None:
    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="restart-on-rotation",
        when=lambda name, **_: name == SINGLETON,
        cancellation_backoff=1.0,
        cancellation_timeout=5.0,
        registry=registry,
    )
    async def restart_on_rotation(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        client = connect(kubeconfig)
        controller = RestartController(client, lambda: RestartConfig.of_body(body))
        task = asyncio.create_task(controller.run())
        try:
            await stopped.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()
