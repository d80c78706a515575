"""Our driver with a probe counting its asyncio tasks, for the soak benchmark only.

    python -m bench.task_probe <driver flags...>     (SSCSI_BENCH_TASKS_FILE=<path> in the environment)

The driver's `main` runs unchanged in this process (same pid, same flags); an event loop policy records
the loop `asyncio.run` creates, and a daemon thread asks that loop every second for
`len(asyncio.all_tasks())` (the asking task excluded) and the most common coroutines, written as one
JSON object to the file (replaced atomically). The soak reads the file when it samples /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import heap_probe

ENV = "SSCSI_BENCH_TASKS_FILE"


class RecordingPolicy(asyncio.DefaultEventLoopPolicy):
    def __init__(self) -> None:
        super().__init__()
        self.loops: list[asyncio.AbstractEventLoop] = []

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        self.loops.append(loop)
        return loop


async def snapshot() -> dict[str, Any]:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    names = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in tasks)
    return {"tasks": len(tasks), "top": dict(names.most_common(8)), "at": time.time()}


def sample_forever(policy: RecordingPolicy, path: Path, interval: float = 1.0) -> None:
    tmp = path.with_suffix(".tmp")
    while True:
        time.sleep(interval)
        loop = policy.loops[-1] if policy.loops else None
        if loop is None or loop.is_closed() or not loop.is_running():
            continue
        try:
            snap = asyncio.run_coroutine_threadsafe(snapshot(), loop).result(timeout=5)
        except Exception:  # a busy or stopping loop: try again next second
            continue
        tmp.write_text(json.dumps(snap))
        os.replace(tmp, path)


def read(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc


def main() -> int:
    policy = RecordingPolicy()
    heap_probe.start(lambda: policy.loops[-1] if policy.loops else None)  # before the driver's imports

    from sscsi_driver.main import main as driver_main

    asyncio.set_event_loop_policy(policy)
    target = os.environ.get(ENV)
    if target:
        threading.Thread(target=sample_forever, args=(policy, Path(target)), daemon=True).start()
    return driver_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
