"""The local apiserver's audit log (Metadata level, one JSON line per request stage), read by tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Event = dict[str, Any]


def audit_events(logs_dir: Path, since: float, needle: str, match: Callable[[Event], bool]) -> list[Event]:
    """The events (one per request stage: a watch has ResponseStarted while it runs) in the audit logs
    written since `since` (epoch seconds) that `match`; `needle` is a string their JSON line must
    contain (a cheap pre-filter)."""
    events = []
    for path in [logs_dir / "audit.log", *sorted(logs_dir.glob("audit-*.log"))]:
        if not path.is_file() or path.stat().st_mtime < since:
            continue
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if needle not in line:
                    continue
                event = json.loads(line)
                if match(event):
                    events.append(event)
    return events


def requests_by(logs_dir: Path, username: str, since: float) -> list[Event]:
    """The requests `username` sent since `since`, once each (the stage after ResponseStarted)."""

    def match(event: Event) -> bool:
        return bool(
            event.get("user", {}).get("username") == username and event.get("stage") != "ResponseStarted"
        )

    return audit_events(logs_dir, since, json.dumps(username), match)
