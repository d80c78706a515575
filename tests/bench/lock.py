"""The machine-wide benchmark lock: two benchmarks at once measure each other (and a bench sharing a
cluster with another removes nothing of it, but still loads the same apiserver and cores).

`flock /run/sscsi-bench.lock make bench` by hand; tests that run a benchmark take it with `bench_lock()`
(the same flock(2) lock, so either side waits for the other)."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH_LOCK = Path("/run/sscsi-bench.lock")


@contextmanager
def bench_lock(path: Path = BENCH_LOCK, wait_s: float = 900.0, poll_s: float = 2.0) -> Iterator[None]:
    """Hold `path`'s exclusive flock for the block; wait up to `wait_s` for another holder (a full
    `make bench` takes ~15 min), then raise TimeoutError naming the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, said = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{path} still held after {wait_s:g}s: another benchmark runs"
                    ) from None
                if not said:
                    print(f"waiting for {path}: another benchmark runs", file=sys.stderr, flush=True)
                    said = True
                time.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
