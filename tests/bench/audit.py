"""Apiserver requests made by a driver, counted from the apiserver's own audit log.

The local control plane writes one JSON line per request stage (Metadata level, RequestReceived
omitted). A request is counted once (by auditID) when its requestReceivedTimestamp falls in the
window, so a watch opened before the window and closed inside it is not counted again.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Mark:
    offset: int
    inode: int
    wall: float


@dataclass
class Count:
    requests: int = 0
    by_verb: Counter[str] = field(default_factory=Counter)
    by_request: Counter[str] = field(default_factory=Counter)
    others: int = 0  # requests from everyone else in the same window (background load indicator)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_verb": dict(sorted(self.by_verb.items())),
            "by_request": dict(self.by_request.most_common(12)),
            "other_clients_requests": self.others,
        }


def _resource(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{ref.get('resource', event.get('requestURI', '?').split('?')[0])}{sub}"


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def available(self) -> bool:
        return self.path.exists()

    def mark(self, wall: float) -> Mark:
        st = os.stat(self.path)
        return Mark(st.st_size, st.st_ino, wall)

    def _chunks(self, mark: Mark) -> list[bytes]:
        chunks: list[bytes] = []
        if os.stat(self.path).st_ino != mark.inode:
            # rotated (--audit-log-maxsize): the rest of the old file is the newest backup
            backups = sorted(glob.glob(str(self.path.with_name(self.path.stem + "-*" + self.path.suffix))))
            if backups:
                with open(backups[-1], "rb") as f:
                    f.seek(mark.offset)
                    chunks.append(f.read())
            start = 0
        else:
            start = mark.offset
        with open(self.path, "rb") as f:
            f.seek(start)
            chunks.append(f.read())
        return chunks

    def count(self, mark: Mark, end_wall: float, matcher: Matcher) -> Count:
        seen: set[str] = set()
        result = Count()
        for chunk in self._chunks(mark):
            for line in chunk.splitlines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line still being written
                audit_id = event.get("auditID", "")
                if audit_id in seen:
                    continue
                ts = event.get("requestReceivedTimestamp")
                if not ts:
                    continue
                received = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
                if not mark.wall <= received <= end_wall:
                    continue
                seen.add(audit_id)
                if matcher(event):
                    result.requests += 1
                    verb = str(event.get("verb", "?"))
                    result.by_verb[verb] += 1
                    result.by_request[f"{verb} {_resource(event)}"] += 1
                else:
                    result.others += 1
        return result


def user_agent_matcher(prefix: str, *, scope: tuple[str, ...] = ()) -> Matcher:
    """Requests whose user agent starts with `prefix`; with `scope`, only those whose URI names one
    of these strings (a node name, `/namespaces/<ns>/`): tells our bench driver apart from other
    copies of the same driver that tests may run against the shared cluster at the same time."""

    def match(event: dict[str, Any]) -> bool:
        if not str(event.get("userAgent", "")).startswith(prefix):
            return False
        if not scope:
            return True
        uri = str(event.get("requestURI", ""))
        return any(s in uri for s in scope)

    return match
