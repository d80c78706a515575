"""tests/bench's pure parts: statistics over repeated runs, the table, the interleaved schedule."""
