"""Create or update the SecretProviderClassPodStatus that records what a volume holds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sscsi_kube import ApiError, Informer, KubeClient, Obj
from sscsi_kube.resources import SPCPS

from .models import NODE_LABEL, PodRef, spcps_name

log = logging.getLogger(__name__)


def desired_status(
    pod: PodRef, spc_name: str, target_path: str, versions: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "podName": pod.name,
        "secretProviderClassName": spc_name,
        "mounted": True,
        "targetPath": target_path,
        "objects": [{"id": k, "version": versions[k]} for k in sorted(versions)],
    }


def _owner(pod: PodRef) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}


def _up_to_date(obj: Obj, node: str, pod: PodRef, status: dict[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return (
        (meta.get("labels") or {}).get(NODE_LABEL) == node
        and (meta.get("ownerReferences") or []) == [_owner(pod)]
        and obj.get("status") == status
    )


class PodStatusWriter:
    def __init__(self, api: KubeClient, cache: Informer, node: str) -> None:
        self._api = api
        self._cache = cache
        self._node = node

    def current_versions(self, pod: PodRef, spc_name: str) -> dict[str, str]:
        obj = self._cache.get(pod.namespace, spcps_name(pod.name, pod.namespace, spc_name))
        if obj is None:
            return {}
        objects = (obj.get("status") or {}).get("objects") or []
        return {str(o.get("id")): str(o.get("version")) for o in objects if o.get("id")}

    async def upsert(self, pod: PodRef, spc_name: str, target_path: str, versions: Mapping[str, str]) -> bool:
        """Make the SPCPS match; returns False when it already did (no request sent)."""
        name = spcps_name(pod.name, pod.namespace, spc_name)
        status = desired_status(pod, spc_name, target_path, versions)
        existing = self._cache.get(pod.namespace, name)
        if existing is not None and _up_to_date(existing, self._node, pod, status):
            return False
        body: Obj = {
            "apiVersion": SPCPS.api_version,
            "kind": SPCPS.kind,
            "metadata": {
                "name": name,
                "namespace": pod.namespace,
                "labels": {NODE_LABEL: self._node},
                "ownerReferences": [_owner(pod)],
            },
            "status": status,
        }
        for attempt in range(4):
            try:
                if existing is None:
                    try:
                        written = await self._api.create(SPCPS, body, pod.namespace)
                    except ApiError as err:
                        if not err.already_exists:
                            raise
                        # e.g. a StatefulSet pod of the same name that ran on another node
                        existing = await self._api.get(SPCPS, name, pod.namespace)
                        continue
                else:
                    merged = dict(existing)
                    meta = dict(existing.get("metadata") or {})
                    meta["labels"] = {**(meta.get("labels") or {}), NODE_LABEL: self._node}
                    meta["ownerReferences"] = [_owner(pod)]
                    merged["metadata"] = meta
                    merged["status"] = status
                    written = await self._api.replace(SPCPS, merged, pod.namespace)
                if written.get("status") != status:
                    # The CRD has a status subresource: the main endpoint ignored status.
                    written["status"] = status
                    written = await self._api.replace_status(SPCPS, written, pod.namespace)
                self._cache.upsert_local(written)
                return True
            except ApiError as err:
                if not err.conflict or attempt == 3:
                    raise
                existing = await self._api.get(SPCPS, name, pod.namespace)
        return True
