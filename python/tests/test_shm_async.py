"""asyncio on shared memory: acquire_async waits its due time without blocking the loop (manual
clock exactly, real clock within bounds), a cancelled acquire_async gives its place back, and
lease_async / spend_async wait in a thread while the loop keeps running."""
from __future__ import annotations

import asyncio
import time

import pytest

import throttle

GCRA = "[g]\nrate = 10/s\nburst = 1\ncapacity = 64\n"
SEM = "[s]\nkind = semaphore\nmax = 1\ncapacity = 64\n"
BUDGET = "[b]\nkind = budget\ninitial = 1\ncapacity = 64\n"


class Ticker:
    """A task that counts 5 ms ticks: it only advances while the loop is free."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1

    async def until(self, n: int) -> None:
        deadline = time.monotonic() + 5
        start = self.ticks
        while self.ticks < start + n:
            assert time.monotonic() < deadline, "the ticker stopped: the loop is blocked"
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        self.task.cancel()


def test_acquire_async_waits_due_time_on_a_manual_clock(daemon_factory):
    arena = daemon_factory(GCRA).arena()
    lim = arena.limiter("g")

    async def main() -> None:
        assert (await lim.acquire_async("k")).admitted, "the first is due at once"
        ticker = Ticker()
        task = asyncio.ensure_future(lim.acquire_async("k"))
        await ticker.until(10)  # 50 ms of loop time, and the arena's clock stands still
        assert not task.done(), "admitted before its due time"
        arena.advance_clock(ns=99_999_999)
        await ticker.until(4)
        assert not task.done(), "admitted 1 ns early"
        arena.advance_clock(ns=1)
        decision = await asyncio.wait_for(task, 5)
        assert decision.admitted and decision.remaining == 0 and decision.limit == 1
        ticker.stop()

    asyncio.run(main())


def test_acquire_async_bounds_on_a_real_clock(daemon_factory):
    lim = daemon_factory(GCRA, clock="monotonic").arena().limiter("g")

    async def main() -> None:
        await lim.acquire_async("k")
        ticker = Ticker()
        t0 = time.monotonic()
        decision = await lim.acquire_async("k", timeout=5)
        elapsed = time.monotonic() - t0
        assert decision.admitted
        assert 0.05 <= elapsed < 3, elapsed  # one emission interval is 100 ms
        assert ticker.ticks >= 3, "the loop did not run while acquire_async waited"
        ticker.stop()
        with pytest.raises(throttle.Timeout):  # due in ~100 ms, allowed 10 ms
            await lim.acquire_async("k", timeout=0.01)

    asyncio.run(main())


def test_cancelled_acquire_async_gives_its_place_back(daemon_factory):
    arena = daemon_factory(GCRA).arena()
    lim = arena.limiter("g")

    async def main() -> None:
        lim.try_acquire("k")  # empty: the next place is due in 100 ms
        task = asyncio.ensure_future(lim.acquire_async("k"))
        await asyncio.sleep(0.02)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # had the cancelled place been kept, the next one would be due in 200 ms
    assert lim.reserve("k", 1, max_wait=10).wait_ns == 100_000_000


def test_lease_async_waits_in_a_thread(daemon_factory):
    lim = daemon_factory(SEM).arena().limiter("s")

    async def main() -> None:
        held = lim.lease("k")  # the semaphore's only unit
        ticker = Ticker()
        entered = asyncio.Event()

        async def user() -> None:
            async with lim.lease_async("k", timeout=None) as lease:
                assert lim.sem_stat("k").held == 1 and lease.amount == 1
                entered.set()
            assert lease.released

        task = asyncio.ensure_future(user())
        await ticker.until(10)
        assert not entered.is_set() and lim.sem_stat("k").pending == 1
        held.release()
        await asyncio.wait_for(task, 5)
        assert entered.is_set() and lim.sem_stat("k").held == 0
        lease = await lim.lease_async("k")  # awaited without `async with`
        assert lim.sem_stat("k").held == 1
        lease.release()
        ticker.stop()

    asyncio.run(main())


def test_cancelled_lease_async_releases_a_late_grant(daemon_factory):
    lim = daemon_factory(SEM).arena().limiter("s")

    async def main() -> None:
        held = lim.lease("k")
        task = asyncio.ensure_future(lim.lease_async("k", timeout=None).__aenter__())
        deadline = time.monotonic() + 5
        while lim.sem_stat("k").pending != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        held.release()  # the waiting thread is granted now, after its task was cancelled
        deadline = time.monotonic() + 5
        while lim.sem_stat("k").held != 0 or lim.sem_stat("k").pending != 0:
            assert time.monotonic() < deadline, "the late lease was never released"
            await asyncio.sleep(0.005)

    asyncio.run(main())


def test_spend_async_waits_in_a_thread(daemon_factory):
    lim = daemon_factory(BUDGET).arena().limiter("b")

    async def main() -> None:
        ticker = Ticker()
        task = asyncio.ensure_future(lim.spend_async("k", 3, timeout=None))
        await ticker.until(5)
        assert not task.done() and lim.budget_stat("k").waiters == 1
        lim.add("k", 2)
        res = await asyncio.wait_for(task, 5)
        assert res.balance == 0
        ticker.stop()

    asyncio.run(main())
