"""Reading facts out of Kubernetes objects: readiness, container states, event times."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from . import names
from .access import Obj


def ref(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta.get("name"))


def condition(obj: Obj, kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def is_true(obj: Obj, kind: str) -> bool:
    cond = condition(obj, kind)
    return cond is not None and cond.get("status") == "True"


def pod_ready(pod: Obj) -> bool:
    return is_true(pod, "Ready")


def container_problems(pod: Obj) -> list[str]:
    """`csi-driver: waiting (CrashLoopBackOff), 4 restarts`, one per container not ready."""
    out = []
    status = pod.get("status") or {}
    for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if c.get("ready"):
            continue
        state = c.get("state") or {}
        if "waiting" in state:
            what = f"waiting ({state['waiting'].get('reason', '')})"
        elif "terminated" in state:
            what = f"terminated ({state['terminated'].get('reason', '')})"
        else:
            what = "running, not ready"
        restarts = int(c.get("restartCount") or 0)
        out.append(f"{c.get('name')}: {what}" + (f", {restarts} restarts" if restarts else ""))
    if not out and status.get("phase") != "Running":
        out.append(f"phase {status.get('phase', 'unknown')}")
    return out


def started_at(pod: Obj) -> str:
    """When the pod's first container started (its volumes were mounted by then); '' if none did."""
    times = []
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        state = c.get("state") or {}
        for key in ("running", "terminated"):
            if key in state and state[key].get("startedAt"):
                times.append(str(state[key]["startedAt"]))
        last = (c.get("lastState") or {}).get("terminated") or {}
        if last.get("startedAt"):
            times.append(str(last["startedAt"]))
    return min(times) if times else ""


def container_image(pod: Obj, container: str) -> str:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            return str(c.get("image") or "")
    return ""


def container_args(pod: Obj, container: str) -> list[str]:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            return [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
    return []


def flag(args: Iterable[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def event_time(event: Obj) -> str:
    """The last time the event was seen (RFC 3339, comparable as text)."""
    series = event.get("series") or {}
    for value in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if value:
            return str(value)[:19] + "Z"
    return ""


def by_time(events: Iterable[Obj]) -> list[Obj]:
    return sorted(events, key=event_time)


def describe_event(event: Obj) -> str:
    count = int(event.get("count") or (event.get("series") or {}).get("count") or 1)
    times = f" (x{count})" if count > 1 else ""
    return f"{event_time(event)} {event.get('reason')}{times}: {event.get('message', '')}"


_SOCKET = re.compile(r"(?:^|[/=\s])(" + names.PROVIDER_NAME_PATTERN + r")\.sock\b")


def provider_sockets(pod: Obj) -> set[str]:
    """Provider names a pod serves: it mounts a providers directory and names `<provider>.sock`."""
    spec = pod.get("spec") or {}
    dirs = {
        str((v.get("hostPath") or {}).get("path") or "").rstrip("/")
        for v in spec.get("volumes") or []
        if v.get("hostPath")
    }
    if not dirs.intersection(names.PROVIDER_DIRS):
        return set()
    found: set[str] = set()
    for c in spec.get("containers") or []:
        words = [*(c.get("command") or []), *(c.get("args") or [])]
        words += [str(e.get("value") or "") for e in c.get("env") or []]
        for word in words:
            found.update(_SOCKET.findall(str(word)))
    found.discard("csi")
    if not found:
        # A provider that does not name its socket in its spec: known by its DaemonSet's name.
        meta = pod.get("metadata") or {}
        owners = meta.get("ownerReferences") or [{}]
        found.add(UNNAMED + str(owners[0].get("name") or meta.get("name", "")))
    return found


UNNAMED = "?"


def provider_label(socket: str) -> str:
    return f"{socket[1:]} (socket not named)" if socket.startswith(UNNAMED) else socket


def serves(sockets: set[str], provider: str) -> bool:
    """`provider` is among a pod's sockets, or in the name of a provider whose socket is not named."""
    return provider in sockets or any(s.startswith(UNNAMED) and provider in s for s in sockets)


def is_driver_pod(pod: Obj) -> bool:
    return any(
        c.get("name") == names.DRIVER_CONTAINER for c in (pod.get("spec") or {}).get("containers") or []
    )


def node_label_mismatch(node: Obj, selector: dict[str, str]) -> list[str]:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return [f"{k}={v}" for k, v in sorted(selector.items()) if labels.get(k) != v]


def untolerated_taints(node: Obj, tolerations: list[dict[str, Any]]) -> list[str]:
    out = []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            out.append(f"{taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}")
    return out


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return bool(toleration.get("key") == taint.get("key") and toleration.get("value") == taint.get("value"))
