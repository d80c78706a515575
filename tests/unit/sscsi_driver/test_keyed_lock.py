"""KeyedLock: one holder per key (or `size`), other keys never wait, entries vanish when unused."""

from __future__ import annotations

import asyncio

import pytest
from sscsi_driver.keyed_lock import KeyedLock


async def test_one_holder_per_key_and_other_keys_do_not_wait() -> None:
    locks: KeyedLock[str] = KeyedLock()
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold("a"):
            order.append("first in")
            first_in.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        async with locks.hold("a"):
            order.append("second in")

    async def other_key() -> None:
        async with locks.hold("b"):
            order.append("other key in")

    holder = asyncio.create_task(first())
    await first_in.wait()
    waiter = asyncio.create_task(second())
    await asyncio.wait_for(other_key(), 1)  # "b" is free while "a" is held
    await asyncio.sleep(0.01)
    assert order == ["first in", "other key in"]  # "second" still waits for "a"
    assert len(locks) == 1
    release.set()
    await asyncio.gather(holder, waiter)
    assert order == ["first in", "other key in", "first out", "second in"]
    assert len(locks) == 0


async def test_waiters_enter_in_arrival_order() -> None:
    locks: KeyedLock[tuple[str, str]] = KeyedLock()
    entered: list[int] = []
    key = ("ns", "secret")

    async def user(n: int) -> None:
        async with locks.hold(key):
            entered.append(n)
            await asyncio.sleep(0)

    async with locks.hold(key):
        tasks = [asyncio.create_task(user(n)) for n in range(5)]
        await asyncio.sleep(0.01)
        assert entered == []
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2, 3, 4]
    assert len(locks) == 0


async def test_size_bounds_holders_per_key() -> None:
    locks: KeyedLock[str] = KeyedLock(3)
    running = peak = 0

    async def user() -> None:
        nonlocal running, peak
        async with locks.hold("pod"):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(user() for _ in range(10)))
    assert peak == 3
    assert len(locks) == 0


async def test_entry_is_released_on_error_and_on_a_cancelled_waiter() -> None:
    locks: KeyedLock[str] = KeyedLock()
    with pytest.raises(RuntimeError, match="boom"):
        async with locks.hold("a"):
            raise RuntimeError("boom")
    assert len(locks) == 0

    async def wait_for_a() -> None:
        async with locks.hold("a"):
            pass

    async with locks.hold("a"):
        waiter = asyncio.create_task(wait_for_a())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(locks) == 1  # only the holder is left
    assert len(locks) == 0
    async with locks.hold("a"):  # still usable
        assert len(locks) == 1


def test_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyedLock(0)
