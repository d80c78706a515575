"""Bounds on what one pod can make the node plugin do (flags in config.py).

- a provider reply: at most --max-objects-per-volume files, each at most --max-file-size bytes
  (the whole reply is already bounded by --max-call-recv-msg-size, as upstream);
- an SPC's secretObjects: at most --max-objects-per-volume Secrets synced per volume;
- concurrency: at most --max-concurrent-publishes-per-pod volumes of one pod are published at
  once (`Publisher`, a `keyed_lock.KeyedLock` of that size); more wait their turn, so one pod
  with many volumes cannot take every worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from .atomic_writer import Payload


class LimitExceeded(ValueError):
    """A request beyond a bound; the message names the flag to raise."""


def check_reply(files: Sequence[Payload], *, max_files: int, max_file_size: int) -> None:
    if len(files) > max_files:
        raise LimitExceeded(
            f"the provider returned {len(files)} files, more than --max-objects-per-volume={max_files}"
        )
    for payload in files:
        if len(payload.contents) > max_file_size:
            raise LimitExceeded(
                f"the provider returned {len(payload.contents)} bytes for {payload.path[:100]!r}, more than "
                f"--max-file-size={max_file_size}"
            )
