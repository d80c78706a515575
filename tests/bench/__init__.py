"""Side-by-side benchmark of our driver and the upstream Go driver (issue 7); see bench/run.py."""
