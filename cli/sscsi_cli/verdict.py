"""Verdicts: one per link of the chain, with what was seen and what to do; and the exit code."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .access import Denied

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2
EXIT_UNCHECKED = 3


class Verdict(enum.StrEnum):
    OK = "ok"
    BROKEN = "broken"
    # Could not be checked: RBAC forbids a read it needs.
    UNKNOWN = "unknown"
    # Not checked because a link it depends on is broken (e.g. no SecretProviderClass to read).
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Link:
    name: str
    verdict: Verdict
    reason: str
    evidence: tuple[str, ...] = ()
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "link": self.name,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


def ok(name: str, *evidence: str, reason: str = "AsExpected") -> Link:
    return Link(name, Verdict.OK, reason, tuple(evidence))


def broken(name: str, reason: str, evidence: Iterable[str], fix: str) -> Link:
    return Link(name, Verdict.BROKEN, reason, tuple(evidence), fix)


def denied(name: str, why: Denied, fix: str = "") -> Link:
    return Link(
        name,
        Verdict.UNKNOWN,
        "Forbidden",
        (f"could not check: {why}",),
        fix or "ask a cluster admin to run this check, or for read access to it",
    )


def skipped(name: str, because: str) -> Link:
    return Link(name, Verdict.SKIPPED, "NotChecked", (f"not checked: {because}",))


@dataclass
class Section:
    """Links about one thing: the pod's node and driver, or one of its volumes."""

    title: str
    links: list[Link] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def exit_code(links: Iterable[Link]) -> int:
    verdicts = {link.verdict for link in links}
    if Verdict.BROKEN in verdicts:
        return EXIT_BROKEN
    if Verdict.UNKNOWN in verdicts:
        return EXIT_UNCHECKED
    return EXIT_OK


def overall(code: int) -> str:
    return {EXIT_OK: "ok", EXIT_BROKEN: "broken", EXIT_UNCHECKED: "unknown"}.get(code, "error")
