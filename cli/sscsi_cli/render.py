"""Output for a person: one line per link, its evidence below, the fix when something is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .verdict import Link, Section, Verdict

_MARK = {Verdict.OK: "ok", Verdict.BROKEN: "BROKEN", Verdict.UNKNOWN: "UNKNOWN", Verdict.SKIPPED: "skipped"}
_WIDTH = max(len(m) for m in _MARK.values()) + 2


def link_lines(link: Link) -> list[str]:
    head = f"  {('[' + _MARK[link.verdict] + ']').ljust(_WIDTH + 1)} {link.name}"
    if link.verdict is not Verdict.OK:
        head += f" ({link.reason})"
    lines = [head]
    pad = " " * (_WIDTH + 4)
    lines += [f"{pad}{line}" for line in link.evidence]
    if link.fix and link.verdict in (Verdict.BROKEN, Verdict.UNKNOWN):
        lines.append(f"{pad}fix: {link.fix}")
    return lines


def sections_text(sections: Iterable[Section]) -> list[str]:
    out: list[str] = []
    for section in sections:
        out += ["", section.title]
        for cond in section.details.get("conditions") or []:
            text = f"  {cond.get('type')}={cond.get('status')} ({cond.get('reason', '')})"
            out.append(f"{text}: {cond['message']}" if cond.get("message") else text)
        for link in section.links:
            out += link_lines(link)
    return out


def summary(subject: str, verdict: str, code: int) -> str:
    return f"{subject}: {verdict.upper() if verdict != 'ok' else 'ok'} (exit {code})"


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first row is the header."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
