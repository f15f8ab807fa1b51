"""Rate kinds on shared memory: exact totals across forked processes and threads (manual clock),
reserve/cancel, Decision fields, limiter info."""
from __future__ import annotations

import threading
from typing import Any, Callable, List

import throttle

PROCS, THREADS, TRIES = 3, 4, 25

GCRA = "[g]\nrate = 10/s\nburst = 5\ncapacity = 64\n"
WINDOW = "[w]\nkind = window\nlimit = 7\nwindow = 1s\ncapacity = 64\n"


def storm(lim: Any, key: str) -> Callable[[int], int]:
    """A child's work: THREADS threads, each trying TRIES times; the admitted count."""
    def child(_i: int) -> int:
        counts: List[int] = [0] * THREADS
        barrier = threading.Barrier(THREADS)

        def worker(t: int) -> None:
            barrier.wait()
            for _ in range(TRIES):
                if lim.try_acquire(key).admitted:
                    counts[t] += 1

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts)
    return child


def total(run_forked: Any, lim: Any, key: str) -> int:
    return sum(run_forked(storm(lim, key), PROCS))


def test_gcra_totals_exact_across_processes_and_threads(daemon_factory, run_forked):
    d = daemon_factory(GCRA)
    arena = d.arena()
    lim = arena.limiter("g")  # opened in the parent, used by every child
    assert total(run_forked, lim, "k") == 5, "exactly the burst is admitted"
    assert total(run_forked, lim, "k") == 0, "nothing more while the clock stands"
    arena.advance_clock(ns=300_000_000)  # 3 emission intervals of 100 ms
    assert total(run_forked, lim, "k") == 3, "exactly the refill after advance_clock"
    arena.advance_clock(60.0)  # far more than a full bucket's worth
    assert total(run_forked, lim, "k") == 5, "the refill never exceeds the burst"
    assert lim.try_acquire("other").admitted, "another key has its own bucket"


def test_window_totals_exact_across_processes_and_threads(daemon_factory, run_forked):
    d = daemon_factory(WINDOW)
    arena = d.arena()
    lim = arena.limiter("w")
    assert total(run_forked, lim, "k") == 7, "exactly the window's limit is admitted"
    arena.advance_clock(0.5)
    assert total(run_forked, lim, "k") == 0, "half a window later the window is still full"
    arena.advance_clock(0.5)
    assert total(run_forked, lim, "k") == 7, "a whole window later: the limit again"


def test_decision_fields_and_peek(daemon_factory):
    d = daemon_factory(GCRA)
    lim = d.arena().limiter("g")
    first = lim.try_acquire("k", 2)
    assert first == throttle.Decision(True, 5, 3, 0, 200_000_000)
    assert lim.try_acquire("k", 0).remaining == 3, "a peek changes nothing"
    assert lim.try_acquire("k", 3).admitted
    denied = lim.try_acquire("k", 1)
    assert not denied and denied.admitted is False
    assert denied.retry_after_ns == 100_000_000 and denied.retry_after == 0.1
    assert lim.acquire("k2", 5, timeout=0).remaining == 0


def test_reserve_due_times_and_cancel(daemon_factory):
    d = daemon_factory(GCRA)
    arena = d.arena()
    lim = arena.limiter("g")
    lim.try_acquire("k", 5)  # empty
    t0 = arena.now_ns()
    r1 = lim.reserve("k", 1, max_wait=10)
    r2 = lim.reserve("k", 1, max_wait=10)
    assert (r1.wait_ns, r2.wait_ns) == (100_000_000, 200_000_000)
    assert r2.due_ns == t0 + 200_000_000
    assert r1.cancel() is False, "r2 is stacked on r1: r1 is kept"
    assert r2.cancel() is True, "the last one is given back"
    assert lim.reserve("k", 1, max_wait=10).wait_ns == 200_000_000
    try:
        lim.reserve("k", 1, max_wait=0.1)
    except throttle.WouldBlock as e:
        assert e.wait_ns == 300_000_000
    else:
        raise AssertionError("a place due after max_wait was taken")


def test_info_and_limiters(daemon_factory):
    d = daemon_factory(GCRA + WINDOW)
    arena = d.arena()
    assert arena.limiters() == [], "nothing opened yet"
    g = arena.limiter("g")
    assert arena.limiter("g") is g
    info = g.info
    assert (info.name, info.kind, info.rate, info.period_ns, info.burst, info.initial) == \
        ("g", "gcra", 10, 1_000_000_000, 5, 5)
    w = arena.limiter("w").info
    assert (w.kind, w.burst, w.period_ns, w.serialized) == ("window", 7, 1_000_000_000, False)
    assert [i.name for i in arena.limiters()] == ["g", "w"]
    assert arena.manual_clock is True


def test_real_clock_arena_refuses_advance(daemon_factory):
    d = daemon_factory(GCRA, clock="monotonic")
    arena = d.arena()
    assert arena.manual_clock is False
    try:
        arena.advance_clock(1.0)
    except throttle.NotPermitted as e:
        assert e.errno == 1
    else:
        raise AssertionError("advance_clock moved a real clock")
