"""bench.stats: median and spread over runs, and the verdict rule (won/lost only beyond the overlap)."""

from __future__ import annotations

import math

import pytest
from bench import stats
from bench.stats import Spread


def s(*values: float) -> Spread:
    return Spread(tuple(values))


def test_spread_is_median_min_max_of_the_runs_in_run_order() -> None:
    sp = stats.spread([5.0, 1, None, "x", float("nan"), 3, True])
    assert sp is not None
    assert sp.runs == (5.0, 1.0, 3.0)  # None, strings, NaN and bools are runs without the figure
    assert (sp.median, sp.low, sp.high, sp.n) == (3.0, 1.0, 5.0, 3)
    assert sp.as_dict() == {"median": 3.0, "min": 1.0, "max": 5.0, "n": 3, "runs": [5.0, 1.0, 3.0]}
    assert s(1, 2, 3, 10).median == 2.5
    assert stats.spread([None, "n/a"]) is None


def test_an_empty_spread_is_refused() -> None:
    with pytest.raises(ValueError):
        Spread(())


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((1, 3), (4, 6), False),
        ((4, 6), (1, 3), False),
        ((1, 4), (4, 6), True),  # touching ends overlap
        ((1, 10), (4, 6), True),  # one inside the other
        ((5, 5), (5, 5), True),
    ],
)
def test_overlap(a: tuple[float, float], b: tuple[float, float], expected: bool) -> None:
    assert stats.overlap(s(*a), s(*b)) is expected
    assert stats.overlap(s(*b), s(*a)) is expected


def test_won_needs_a_better_median_and_disjoint_ranges() -> None:
    assert stats.verdict(s(10, 11, 12), s(20, 21, 25)) == stats.WON
    assert stats.verdict(s(20, 21, 25), s(10, 11, 12)) == stats.LOST


def test_overlapping_ranges_are_noisy_even_when_the_median_is_better() -> None:
    # our median 10 is half of upstream's 20, but one slow run of ours reaches upstream's range
    assert stats.verdict(s(9, 10, 19), s(18, 20, 22)) == stats.NOISY
    assert stats.verdict(s(18, 20, 22), s(9, 10, 19)) == stats.NOISY
    assert stats.verdict(s(10, 12, 14), s(14, 30, 31)) == stats.NOISY  # touching ends


def test_higher_is_better_rows_flip_the_direction() -> None:
    assert stats.verdict(s(90, 95, 99), s(40, 45, 50), higher_is_better=True) == stats.WON
    assert stats.verdict(s(40, 45, 50), s(90, 95, 99), higher_is_better=True) == stats.LOST
    assert stats.verdict(s(40, 45, 50), s(90, 95, 99)) == stats.WON


def test_identical_constant_values_are_equal_not_noisy() -> None:
    assert stats.verdict(s(0, 0, 0), s(0, 0, 0)) == stats.EQUAL
    assert stats.verdict(s(0), s(0)) == stats.EQUAL
    assert stats.verdict(s(110, 110, 110), s(110, 112, 110)) == stats.NOISY


def test_a_single_run_gives_no_verdict_and_a_missing_side_none() -> None:
    assert stats.verdict(s(10), s(20)) == stats.SINGLE
    assert stats.verdict(s(10, 11), s(20)) == stats.SINGLE
    assert stats.verdict(s(10, 11), s(20, 21), min_runs=3) == stats.SINGLE
    assert stats.verdict(None, s(1, 2)) == stats.MISSING
    assert stats.verdict(s(1, 2), None) == stats.MISSING


def test_ratio() -> None:
    assert stats.ratio(3, 2) == 1.5
    assert stats.ratio(0, 0) == 1.0
    assert stats.ratio(1, 0) is None
    assert stats.ratio(None, 2) is None
    assert stats.ratio(1, math.nan) is None


def test_above_floor_says_how_far_and_whether_the_floor_alone_loses() -> None:
    out = stats.above_floor(s(55, 56, 57), 33.0, s(37, 38, 40))
    assert out == {"value": 33.0, "above": 23.0, "times": 1.697, "floor_above_upstream": False}
    assert stats.above_floor(s(55), 41.0, s(38))["floor_above_upstream"] is True
    assert stats.above_floor(None, 41.0, s(38)) == {"value": 41.0}


def test_median_view_takes_the_median_of_every_numeric_leaf() -> None:
    runs = [
        {"base": {"rss": 50.0, "requests": 110, "lat": [1, 2], "ok": True, "err": None}},
        {"base": {"rss": 60.0, "requests": 112, "lat": [3], "ok": False, "extra": 7}},
        {"base": {"rss": 55.0, "requests": 111, "lat": [4], "ok": True}},
        None,  # a driver absent from a round
    ]
    view = stats.median_view(runs)
    assert view["base"]["rss"] == 55.0
    assert view["base"]["requests"] == 111 and isinstance(view["base"]["requests"], int)
    assert view["base"]["lat"] == [1, 2]  # lists: the first run's
    assert view["base"]["ok"] is True  # bools are not averaged
    assert view["base"]["extra"] == 7  # a key only one run has
    assert stats.median_view([{"n": 1}, {"n": 2}]) == {"n": 1.5}
    assert stats.median_view([None, None]) is None


def test_tally_lists_every_verdict() -> None:
    counts = stats.tally([stats.WON, stats.WON, stats.NOISY])
    assert counts[stats.WON] == 2 and counts[stats.NOISY] == 1 and counts[stats.LOST] == 0
    assert set(counts) == set(stats.VERDICTS)
