"""chaos.bounds: staleness allowed grows with the fault time inside its lookback, overlaps counted once."""

from __future__ import annotations

from chaos.bounds import BACKOFF_FACTOR, Interval, allowance, covered


def test_covered_counts_overlaps_once_and_clips() -> None:
    spans = [Interval("a", 10, 20), Interval("b", 15, 30), Interval("c", 50, None)]
    assert covered(spans, 0, 40) == 20
    assert covered(spans, 25, 60) == 5 + 10


def test_allowance_without_faults_is_the_base() -> None:
    assert allowance([], 100.0, 30.0) == 30.0
    assert allowance([Interval("a", 0, 10)], 100.0, 30.0) == 30.0  # long over


def test_allowance_grows_with_a_recent_fault_and_chains() -> None:
    one = allowance([Interval("a", 80, 95)], 100.0, 30.0)
    assert one == 30.0 + BACKOFF_FACTOR * 15
    chained = allowance([Interval("a", 40, 70), Interval("b", 80, 95)], 100.0, 30.0)
    assert chained == 30.0 + BACKOFF_FACTOR * 45  # the first fault comes into the grown window
    assert allowance([Interval("a", 90, None)], 100.0, 30.0) == 30.0 + BACKOFF_FACTOR * 10
