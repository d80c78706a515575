"""Lines a test module wants printed in pytest's final summary (e.g. the fault matrix tally)."""

from __future__ import annotations

import pytest

SUMMARY_LINES = pytest.StashKey[list[str]]()


def add_summary_line(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(SUMMARY_LINES, []).append(line)
