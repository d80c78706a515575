"""The Secrets a volume's SecretProviderClass syncs (secretObjects): present, the driver's, keys, owners.

Only names, keys and owners are read: a Secret's values are dropped when it is fetched.
"""

from __future__ import annotations

from . import names
from .access import Denied, Obj
from .facts import PodFacts, VolumeFacts
from .objects import container_args, describe_event, flag
from .verdict import Link, broken, denied, ok, skipped

SYNC_LINK = "synced Secrets"


def _secret_objects(volume: VolumeFacts) -> list[Obj]:
    if not isinstance(volume.spc, dict):
        return []
    return list((volume.spc.get("spec") or {}).get("secretObjects") or [])


def _sync_disabled(facts: PodFacts) -> bool | None:
    """From the driver pod's --enable-secret-sync (None when the pod could not be read)."""
    if isinstance(facts.driver_pods, Denied) or not facts.driver_pods:
        return None
    value = flag(container_args(facts.driver_pods[0], names.DRIVER_CONTAINER), "--enable-secret-sync")
    return value is not None and value.lower() == "false"


def _sync_events(facts: PodFacts, secret: str) -> list[str]:
    if isinstance(facts.events, Denied):
        return []
    return [
        describe_event(e)
        for e in facts.events
        if e.get("reason") in (names.SYNC_REFUSED, names.SYNC_FAILED)
        and secret in str(e.get("message") or "")
    ][-1:]


def check_secrets(facts: PodFacts, volume: VolumeFacts, mounted: bool) -> Link:
    objects = _secret_objects(volume)
    if not isinstance(volume.spc, dict):
        return skipped(SYNC_LINK, "no SecretProviderClass to read secretObjects from")
    if not objects:
        return ok(
            SYNC_LINK, "the SecretProviderClass lists no secretObjects: nothing to sync", reason="NoSync"
        )
    if not mounted:
        return skipped(SYNC_LINK, "the volume is not mounted (Secrets are synced after a mount)")
    evidence: list[str] = []
    problems: list[tuple[str, str]] = []
    for obj in objects:
        name = str(obj.get("secretName") or "")
        secret = volume.secrets.get(name)
        if isinstance(secret, Denied):
            return denied(SYNC_LINK, secret)
        wanted = sorted(str(d.get("key")) for d in obj.get("data") or [])
        if secret is None:
            if _sync_disabled(facts):
                problems.append(
                    (
                        f"Secret {name} does not exist: the driver runs with --enable-secret-sync=false",
                        "enable spec.driverConfig.secretsStore.syncSecret in the ClusterCSIDriver",
                    )
                )
            else:
                problems.append(
                    (
                        f"Secret {name} does not exist; "
                        + "; ".join(_sync_events(facts, name) or ["no event"]),
                        "see the driver's log on the pod's node",
                    )
                )
            continue
        meta = secret.get("metadata") or {}
        if (meta.get("labels") or {}).get(names.MANAGED_LABEL) != "true":
            problems.append(
                (
                    f"Secret {name} exists but is not the driver's (no label {names.MANAGED_LABEL}=true): "
                    "it is left untouched",
                    f"kubectl label secret -n {facts.namespace} {name} {names.MANAGED_LABEL}=true "
                    "to hand it over, or sync into another secretName",
                )
            )
            continue
        keys = sorted(secret.get("data") or {})
        missing = [k for k in wanted if k not in keys]
        if missing:
            problems.append((f"Secret {name} lacks keys {missing}", "see the driver's log on the pod's node"))
            continue
        owners = ", ".join(f"{o.get('kind')}/{o.get('name')}" for o in meta.get("ownerReferences") or [])
        evidence.append(f"Secret {name} ({obj.get('type')}): keys {keys}; owners: {owners or 'none'}")
    if problems:
        return broken(
            SYNC_LINK,
            "SecretNotSynced",
            [p for p, _ in problems] + evidence,
            "; ".join(dict.fromkeys(f for _, f in problems)),
        )
    return ok(SYNC_LINK, *evidence)
