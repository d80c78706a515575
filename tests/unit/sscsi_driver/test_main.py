"""main.run: everything it starts is stopped, after SIGTERM and when startup fails half-way."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import signal
import socket
from pathlib import Path

import pytest
from sscsi_driver import main
from sscsi_driver.config import Config


def _others() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def _settled(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    for _ in range(50):
        left = {t for t in _others() - before if not t.done()}
        if not left:
            return left
        await asyncio.sleep(0.02)
    return left


async def test_sigterm_stops_everything_and_removes_the_socket(cfg: Config, tmp_path: Path) -> None:
    before = _others()
    sock = tmp_path / "csi" / "csi.sock"
    running = asyncio.create_task(main.run(cfg))
    for _ in range(200):
        if sock.exists():
            break
        await asyncio.sleep(0.02)
    assert sock.exists(), "the CSI socket never appeared"
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, 20)
    assert not sock.exists()
    assert await _settled(before | {running}) == set(), "tasks left running after shutdown"
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)  # handler was removed


async def test_failed_startup_stops_what_was_started(cfg: Config, tmp_path: Path) -> None:
    before = _others()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host, port = taken.getsockname()
        cfg = dataclasses.replace(cfg, metrics_addr=f"{host}:{port}")
        with pytest.raises(OSError):
            await main.run(cfg)
    assert await _settled(before) == set(), "caches or other tasks left running after a failed start"
    assert not (tmp_path / "csi" / "csi.sock").exists()


def test_heap_trimmer_trims_after_allocations_and_skips_when_idle() -> None:
    trimmed: list[int] = []
    trimmer = main.HeapTrimmer()
    gc.disable()  # only the collections this test makes
    try:
        assert trimmer() is True  # glibc here: the first call trims
        trimmer._malloc_trim = lambda pad: trimmed.append(pad) or 1
        assert trimmer() is False  # no collection since: nothing was allocated worth trimming
        gc.collect(0)
        assert trimmer() is True and trimmed == [0]
        assert trimmer() is False and trimmed == [0]
    finally:
        gc.enable()
