"""The Secret a secretObject asks for, and how it merges into what the cluster has (pure).

Nothing here talks to the API: `build_secret` turns one secretObject and the volume's mounted
files into a `DesiredSecret` (raw file bytes, base64 as the API carries them; `kubernetes.io/tls`:
key and certificates split from the PEM bundle); `new_object` and `updated_object` turn it into
the body to create or replace. Labels and annotations are merged into what is there (ours win,
other tools' stay) and owner references are only ever added, matched by uid.
The error messages are safe for logs and events: they never carry Secret contents.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sscsi_kube import Obj

from . import atomic_writer, tls
from .models import MANAGED_LABEL, SecretObject, valid_object_name
from .sync_ownership import RESERVED_ANNOTATIONS

TLS_TYPE = "kubernetes.io/tls"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"
OWNER_FIELDS = ("apiVersion", "kind", "name", "uid")


class SyncError(Exception):
    """Why one Secret could not be synced; the message is safe for logs and events."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class DesiredSecret:
    name: str
    type: str
    data: dict[str, str] = field(repr=False)  # base64, as the API carries it
    labels: dict[str, str]
    annotations: dict[str, str]


# ---- building the desired Secret from the mounted files (runs in a worker thread) ----


def _value(secret_type: str, key: str, object_name: str, contents: bytes) -> bytes:
    if secret_type != TLS_TYPE:
        return contents
    try:
        if key == TLS_KEY:
            return tls.private_key_pem(contents)
        if key == TLS_CERT:
            return tls.certificates_pem(contents)
    except tls.TlsError as err:
        raise SyncError(f"bad TLS material in objectName {object_name} for key {key}: {err}") from None
    raise SyncError(f"key {key} is not allowed in a {TLS_TYPE} Secret (use {TLS_CERT} and {TLS_KEY})")


def build_secret(obj: SecretObject, files: Mapping[str, Path]) -> DesiredSecret:
    """The Secret one secretObject asks for; `files` is `read_mounted_files(target)`."""
    name = obj.secret_name.strip()
    secret_type = obj.type.strip()
    if not name:
        raise SyncError("secretName is not set in a secretObject")
    if not valid_object_name(name):
        raise SyncError(f"secretName {name!r} is not a valid Secret name")
    if not secret_type:
        raise SyncError(f"type is not set for Secret {name} (e.g. Opaque or {TLS_TYPE})")
    if not obj.data:
        raise SyncError(f"data is not set for Secret {name}")
    data: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    for ref in obj.data:
        object_name, key = ref.object_name.strip(), ref.key.strip()
        if not object_name:
            raise SyncError(f"objectName is not set in a data entry of Secret {name}")
        if not key:
            raise SyncError(f"key is not set for objectName {object_name} in Secret {name}")
        if key in data:
            raise SyncError(f"key {key} appears more than once in Secret {name}")
        if object_name not in contents:
            path = files.get(object_name)
            if path is None:
                raise SyncError(f"file matching objectName {object_name} not found in the pod")
            try:
                contents[object_name] = path.read_bytes()
            except OSError as err:
                raise SyncError(f"cannot read the file of objectName {object_name}: {err.strerror}") from None
        value = _value(secret_type, key, object_name, contents[object_name])
        data[key] = base64.b64encode(value).decode("ascii")
    if secret_type == TLS_TYPE and set(data) != {TLS_CERT, TLS_KEY}:
        raise SyncError(f"a {TLS_TYPE} Secret needs both {TLS_CERT} and {TLS_KEY} keys")
    return DesiredSecret(
        name=name,
        type=secret_type,
        data=data,
        labels={**obj.labels, MANAGED_LABEL: "true"},
        annotations={k: v for k, v in obj.annotations.items() if k not in RESERVED_ANNOTATIONS},
    )


def build_all(objects: Sequence[SecretObject], target: Path) -> list[DesiredSecret | SyncError]:
    """One result per secretObject, in order; errors do not stop the others."""
    try:
        files = atomic_writer.read_mounted_files(target)
    except OSError as err:
        failure = SyncError(f"cannot read the mounted files: {err.strerror}")
        return [failure for _ in objects]
    results: list[DesiredSecret | SyncError] = []
    seen: set[str] = set()
    for obj in objects:
        try:
            desired = build_secret(obj, files)
            if desired.name in seen:
                raise SyncError(f"secretName {desired.name} appears more than once in secretObjects")
            seen.add(desired.name)
            results.append(desired)
        except SyncError as err:
            results.append(err)
    return results


# ---- comparing with and merging into what the cluster has ----


def owner_refs(refs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """apiVersion, kind, name and uid of each reference (controller flags are not copied, as upstream)."""
    return [{k: str(ref.get(k) or "") for k in OWNER_FIELDS} for ref in refs if ref.get("uid")]


def merge_owners(existing: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, str]]) -> list[Any]:
    """`existing` unchanged, plus each wanted owner whose uid is not there yet. Never drops one."""
    merged: list[Any] = [dict(ref) for ref in existing]
    uids = {str(ref.get("uid")) for ref in existing}
    for ref in wanted:
        if ref["uid"] not in uids:
            merged.append(dict(ref))
            uids.add(ref["uid"])
    return merged


def meta_of(obj: Obj) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def _contains(have: Mapping[str, Any] | None, want: Mapping[str, str]) -> bool:
    have = have or {}
    return all(have.get(k) == v for k, v in want.items())


def type_of(obj: Obj) -> str:
    return str(obj.get("type") or "Opaque")


def needs_recreate(existing: Obj, desired: DesiredSecret) -> bool:
    """`type` cannot be updated; neither can anything of a Secret marked immutable."""
    if type_of(existing) != desired.type:
        return True
    return bool(existing.get("immutable")) and (existing.get("data") or {}) != desired.data


def up_to_date(existing: Obj, desired: DesiredSecret, owners: Sequence[Mapping[str, str]]) -> bool:
    meta = meta_of(existing)
    have_uids = {str(ref.get("uid")) for ref in meta.get("ownerReferences") or []}
    return (
        type_of(existing) == desired.type
        and (existing.get("data") or {}) == desired.data
        and _contains(meta.get("labels"), desired.labels)
        and _contains(meta.get("annotations"), desired.annotations)
        and all(ref["uid"] in have_uids for ref in owners)
    )


def updated_object(existing: Obj, desired: DesiredSecret, owners: Sequence[Mapping[str, str]]) -> Obj:
    """`existing` with our data, labels, annotations and owners; resourceVersion kept for the lock."""
    meta = {k: v for k, v in meta_of(existing).items() if k != "managedFields"}
    meta["labels"] = {**(meta.get("labels") or {}), **desired.labels}
    annotations = {**(meta.get("annotations") or {}), **desired.annotations}
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = merge_owners(meta.get("ownerReferences") or [], owners)
    body = {k: v for k, v in existing.items() if k != "stringData"}
    body.update(apiVersion="v1", kind="Secret", metadata=meta, type=desired.type, data=dict(desired.data))
    return body


def new_object(namespace: str, desired: DesiredSecret, owners: Sequence[Mapping[str, Any]]) -> Obj:
    meta: dict[str, Any] = {"name": desired.name, "namespace": namespace, "labels": dict(desired.labels)}
    if desired.annotations:
        meta["annotations"] = dict(desired.annotations)
    if owners:
        meta["ownerReferences"] = [dict(ref) for ref in owners]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": desired.type,
        "data": dict(desired.data),
    }
