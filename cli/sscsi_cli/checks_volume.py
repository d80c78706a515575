"""The links of one volume: its SecretProviderClass, the provider on the node, the mount, the events."""

from __future__ import annotations

import re

from . import names
from .access import Denied, Obj
from .facts import PodFacts, VolumeFacts
from .objects import (
    by_time,
    container_problems,
    describe_event,
    event_time,
    is_driver_pod,
    pod_ready,
    provider_label,
    ref,
    serves,
    started_at,
)
from .objects import provider_sockets as sockets_of
from .verdict import Link, broken, denied, ok, skipped

SPC_LINK = "SecretProviderClass"
PROVIDER_LINK = "provider on the node"
SPCPS_LINK = "mount (SecretProviderClassPodStatus)"
EVENTS_LINK = "events"

_PROVIDER_NAME = re.compile(names.PROVIDER_NAME_PATTERN)


def spc_provider(volume: VolumeFacts) -> str:
    return str(
        ((volume.spc or {}) if isinstance(volume.spc, dict) else {}).get("spec", {}).get("provider") or ""
    )


def check_spc(facts: PodFacts, volume: VolumeFacts) -> Link:
    ns = facts.namespace
    if not volume.spc_name:
        return broken(
            SPC_LINK,
            "SecretProviderClassNotNamed",
            [f"volume {volume.name} has no volumeAttributes.secretProviderClass"],
            "set csi.volumeAttributes.secretProviderClass to the name of a SecretProviderClass in "
            f"namespace {ns}",
        )
    if isinstance(volume.spc, Denied):
        return denied(SPC_LINK, volume.spc)
    if volume.spc is None:
        return broken(
            SPC_LINK,
            "SecretProviderClassNotFound",
            [f"no SecretProviderClass {volume.spc_name} in namespace {ns} (the pod's namespace)"],
            f"create SecretProviderClass {volume.spc_name} in namespace {ns}, or name an existing one "
            "(one in another namespace does not count)",
        )
    spec = volume.spc.get("spec") or {}
    problems = []
    provider = str(spec.get("provider") or "")
    if not _PROVIDER_NAME.fullmatch(provider):
        problems.append(f"spec.provider {provider!r} is not a provider name ({names.PROVIDER_NAME_PATTERN})")
    for i, obj in enumerate(spec.get("secretObjects") or []):
        where = f"spec.secretObjects[{i}]"
        if not obj.get("secretName"):
            problems.append(f"{where}.secretName is empty")
        if not obj.get("type"):
            problems.append(f"{where}.type is empty")
        data = obj.get("data") or []
        if not data:
            problems.append(f"{where}.data is empty")
        for j, item in enumerate(data):
            if not item.get("objectName") or not item.get("key"):
                problems.append(f"{where}.data[{j}] needs objectName and key")
    if problems:
        return broken(
            SPC_LINK,
            "SecretProviderClassInvalid",
            problems,
            f"kubectl edit secretproviderclass -n {ns} {volume.spc_name}",
        )
    synced = len(spec.get("secretObjects") or [])
    return ok(
        SPC_LINK,
        f"SecretProviderClass {ns}/{volume.spc_name}: provider {provider}, "
        f"parameters {sorted(spec.get('parameters') or {})}, {synced} secretObjects",
    )


def volume_events(facts: PodFacts, volume: VolumeFacts) -> list[Obj]:
    """Warnings about this volume (kubelet's FailedMount, the driver's) and rotation completions."""
    if isinstance(facts.events, Denied):
        return []
    out = []
    for event in facts.events:
        reason, message = event.get("reason"), str(event.get("message") or "")
        about_volume = reason == names.FAILED_MOUNT and f'"{volume.name}"' in message
        about_spc = (
            reason in (names.ROTATION_FAILED, names.ROTATION_COMPLETE)
            and bool(volume.spc_name)
            and (message.rstrip().endswith(f" {volume.spc_name}") or f" {volume.spc_name}:" in message)
        )
        if about_volume or about_spc:
            out.append(event)
    return by_time(out)


def _mounted(volume: VolumeFacts) -> bool:
    return isinstance(volume.spcps, dict) and bool((volume.spcps.get("status") or {}).get("mounted"))


def _provider_missing_events(facts: PodFacts, volume: VolumeFacts, provider: str) -> list[Obj]:
    needle = f'provider not found: provider "{provider}"'
    return [e for e in volume_events(facts, volume) if needle in str(e.get("message") or "")]


def check_provider(facts: PodFacts, volume: VolumeFacts) -> Link:
    provider = spc_provider(volume)
    if not provider:
        return skipped(PROVIDER_LINK, "no valid SecretProviderClass names a provider")
    node = facts.node_name
    if not node:
        return skipped(PROVIDER_LINK, "the pod is not scheduled to a node")
    missing = _provider_missing_events(facts, volume, provider)
    last_missing = [f"last FailedMount: {describe_event(missing[-1])}"] if missing else []
    pods = facts.node_pods
    if isinstance(pods, Denied):
        if missing and not _mounted(volume):
            return broken(PROVIDER_LINK, "ProviderNotFound", last_missing, _install_fix(provider, node, []))
        if _mounted(volume):
            return ok(PROVIDER_LINK, f"the volume was mounted through provider {provider} (its SPCPS)")
        return denied(PROVIDER_LINK, pods)
    pods = [p for p in pods if not is_driver_pod(p)]  # the driver mounts the providers directory too
    providers = {p["metadata"]["name"]: sockets_of(p) for p in pods}
    serving = [p for p in pods if serves(providers[p["metadata"]["name"]], provider)]
    ready = [p for p in serving if pod_ready(p)]
    if ready:
        return ok(
            PROVIDER_LINK, f"provider pod {ref(ready[0])} is ready on node {node} and serves {provider}.sock"
        )
    if serving:
        pod = serving[0]
        return broken(
            PROVIDER_LINK,
            "ProviderNotReady",
            [
                f"provider pod {ref(pod)} on node {node} serves {provider}.sock but is not ready: "
                + "; ".join(container_problems(pod)),
                *last_missing,
            ],
            f"kubectl describe pod -n {pod['metadata']['namespace']} {pod['metadata']['name']}",
        )
    known = sorted({provider_label(name) for names_ in providers.values() for name in names_})
    if _mounted(volume) and not missing:
        return ok(
            PROVIDER_LINK,
            f"no pod on node {node} names {provider}.sock, but the driver mounted the volume through it "
            "(a provider running outside Kubernetes?)",
        )
    return broken(
        PROVIDER_LINK,
        "ProviderNotFound",
        [
            f"no pod on node {node} serves {provider}.sock; providers there: {', '.join(known) or 'none'}",
            *last_missing,
        ],
        _install_fix(provider, node, known),
    )


def _install_fix(provider: str, node: str, known: list[str]) -> str:
    text = f"install provider {provider} on node {node} (a DaemonSet writing {provider}.sock into "
    text += f"{names.PROVIDER_DIRS[0]})"
    if known:
        text += f", or set the SecretProviderClass's spec.provider to one present: {', '.join(known)}"
    return text


def check_mount(facts: PodFacts, volume: VolumeFacts) -> Link:
    if not volume.spc_name:
        return skipped(SPCPS_LINK, "no SecretProviderClass named")
    name = names.spcps_name(facts.pod_name, facts.namespace, volume.spc_name)
    status = volume.spcps
    if isinstance(status, Denied):
        return denied(SPCPS_LINK, status)
    if not _mounted(volume):
        what = f"no SecretProviderClassPodStatus {name}" if status is None else f"{name}: mounted is false"
        return broken(
            SPCPS_LINK,
            "NotMounted",
            [f"{what}: the driver has not mounted volume {volume.name}"],
            "the first broken link above (or the events) says why",
        )
    st = (status or {}).get("status") or {}
    objects = ", ".join(f"{o.get('id')}@{o.get('version')}" for o in st.get("objects") or []) or "none"
    rotations = [e for e in volume_events(facts, volume) if e.get("reason") == names.ROTATION_COMPLETE]
    last = event_time(rotations[-1]) if rotations else "none since the pod started"
    if isinstance(facts.events, Denied):
        last = f"unknown ({facts.events})"
    return ok(
        SPCPS_LINK,
        f"{name}: mounted at {st.get('targetPath')}",
        f"objects: {objects}",
        f"last rotation: {last}",
    )


def check_events(facts: PodFacts, volume: VolumeFacts) -> Link:
    if isinstance(facts.events, Denied):
        return denied(EVENTS_LINK, facts.events)
    events = volume_events(facts, volume)
    failures = [e for e in events if e.get("reason") in (names.FAILED_MOUNT, names.ROTATION_FAILED)]
    if not failures:
        return ok(EVENTS_LINK, f"no {names.FAILED_MOUNT} or {names.ROTATION_FAILED} events for this volume")
    last = failures[-1]
    started = started_at(facts.pod)
    completions = [e for e in events if e.get("reason") == names.ROTATION_COMPLETE]
    settled = max([started] + [event_time(e) for e in completions])
    if not started:
        return broken(
            EVENTS_LINK,
            "MountFailing",
            [
                f"the pod's containers have not started: {'; '.join(container_problems(facts.pod))}",
                describe_event(last),
            ],
            "fix the first broken link above; kubelet retries the mount on its own",
        )
    if event_time(last) > settled:
        return broken(
            EVENTS_LINK,
            "RefreshFailing",
            [f"mounted, but refreshes fail since {event_time(failures[0])}", describe_event(last)],
            "the volume keeps its last good contents; fix the provider or its back-end (see its logs)",
        )
    return ok(
        EVENTS_LINK,
        f"{len(failures)} failure events before the pod started ({started})",
        f"the last: {describe_event(last)}",
        reason="Recovered",
    )
