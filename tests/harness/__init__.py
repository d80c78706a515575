"""Test harness shared by e2e tests, the demo and the benchmark: a kubelet emulator and process helpers."""
