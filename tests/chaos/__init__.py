"""Chaos soak on the real node: faults, load, invariants (issue #18)."""
