"""chaos.schedule: a seed replays its schedule; the short version sees every kind; a kind never overlaps
itself; every fault is released inside the window."""

from __future__ import annotations

import itertools
import random

from chaos.schedule import kinds_count, plan

KINDS = {f"kind-{i}": 10.0 + 5 * i for i in range(13)}


def test_same_seed_same_schedule() -> None:
    assert plan(random.Random(7), KINDS, 600, 20, False) == plan(random.Random(7), KINDS, 600, 20, False)
    assert plan(random.Random(7), KINDS, 600, 20, False) != plan(random.Random(8), KINDS, 600, 20, False)


def test_short_version_has_every_kind_for_many_seeds() -> None:
    for seed in range(200):
        planned = plan(random.Random(seed), KINDS, 110, 20, True)
        assert set(kinds_count(planned)) == set(KINDS), seed


def test_a_kind_never_overlaps_itself_and_ends_in_the_window() -> None:
    for seed in range(50):
        planned = plan(random.Random(seed), KINDS, 900, 8, False)
        busy: dict[str, float] = {}
        for p in planned:
            assert p.start >= busy.get(p.kind, 0.0)
            assert p.start + p.hold <= 900 + 1e-6 or p.hold == 2.0
            busy[p.kind] = p.start + p.hold


def test_faults_overlap_sometimes() -> None:
    planned = plan(random.Random(3), KINDS, 900, 10, False)
    overlaps = sum(1 for a, b in itertools.pairwise(planned) if b.start < a.start + a.hold)
    assert overlaps > 0


def test_no_kinds_no_faults() -> None:
    assert plan(random.Random(1), {}, 100, 10, True) == []
