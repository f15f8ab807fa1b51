"""Semaphores on shared memory: the bound across forked processes, leases given back at the end
of a with-block, a SIGKILLed holder's lease reclaimed, fork safety of a parent's lease."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

import throttle

SEM = "[s]\nkind = semaphore\nmax = 2\ncapacity = 64\nleases_per_key = 8\n"
GCRA = "[g]\nrate = 10/s\nburst = 5\ncapacity = 64\n"


def test_never_more_than_max_held_across_processes(daemon_factory, run_forked):
    d = daemon_factory(SEM)
    lim = d.arena().limiter("s")
    ctx = multiprocessing.get_context("fork")
    inside = ctx.Value("i", 0)  # holders inside the with-block now, across every process
    peak = ctx.Value("i", 0)
    rounds = 15

    def child(_i: int) -> int:
        def worker() -> None:
            for _ in range(rounds):
                with lim.lease("r", ttl=60, timeout=None):
                    with inside.get_lock():
                        inside.value += 1
                        peak.value = max(peak.value, inside.value)
                    time.sleep(0.001)
                    with inside.get_lock():
                        inside.value -= 1
        ts = [threading.Thread(target=worker) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return rounds * 2

    assert sum(run_forked(child, 3)) == 90, "every worker got all its leases"
    assert peak.value <= 2, "more than max=2 held at once: %d" % peak.value
    assert peak.value == 2, "the test never had two holders at once (no contention)"
    st = lim.sem_stat("r")
    assert (st.held, st.leases, st.pending, st.remainder) == (0, 0, 0, 2)


def test_lease_released_at_the_end_of_with(daemon_factory):
    d = daemon_factory(SEM)
    lim = d.arena().limiter("s")
    with lim.lease("k", amount=2, ttl=30) as lease:
        assert lease.amount == 2 and not lease.released
        assert lim.sem_stat("k").held == 2
        assert lease.expires_ns == d.arena().now_ns() + 30_000_000_000
        with pytest.raises(throttle.WouldBlock):
            lim.lease("k", timeout=0)
    assert lease.released and lim.sem_stat("k").held == 0
    lease.release()  # idempotent
    with pytest.raises(RuntimeError):
        with lim.lease("k") as lease2:
            raise RuntimeError("the block fails")
    assert lease2.released and lim.sem_stat("k").held == 0, "released on an exception too"
    with throttle.lock(d.arena(), "s", "k", amount=1) as held:
        assert lim.sem_stat("k").held == 1 and held.amount == 1
    assert lim.sem_stat("k").held == 0


def test_heartbeat_and_expiry(daemon_factory):
    d = daemon_factory(SEM)
    arena = d.arena()
    lim = arena.limiter("s")
    lease = lim.lease("k", ttl=1.0)
    arena.advance_clock(0.5)
    assert lease.heartbeat() == arena.now_ns() + 1_000_000_000, "the lease's own ttl again"
    assert lease.heartbeat(5) == arena.now_ns() + 5_000_000_000
    arena.advance_clock(6.0)
    assert lim.sem_stat("k").held == 0, "expired and reclaimed"
    with pytest.raises(throttle.Expired):
        lease.heartbeat()


def test_lease_of_a_sigkilled_child_is_reclaimed(daemon_factory):
    d = daemon_factory(SEM)
    lim = d.arena().limiter("s")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            lim.lease("k", amount=2, ttl=3600)
            os.write(w, b"held")
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 4) == b"held"
    os.close(r)
    assert lim.sem_stat("k").held == 2
    with pytest.raises(throttle.WouldBlock):
        lim.lease("k", timeout=0)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert lim.sem_stat("k").held == 0, "the dead child's lease is reclaimed, ttl or not"
    with lim.lease("k", amount=2, timeout=0) as lease:
        assert lease.amount == 2


def test_fork_child_uses_parent_limiter_but_cannot_release_its_lease(daemon_factory, run_forked):
    d = daemon_factory(SEM + GCRA)
    arena = d.arena()
    sem, gcra = arena.limiter("s"), arena.limiter("g")
    lease = sem.lease("k")

    def child(_i: int) -> str:
        assert gcra.try_acquire("c").admitted, "the parent's limiter works in the child"
        with sem.lease("other") as own:  # and its own leases are its to release
            assert own.amount == 1
        try:
            lease.release()
        except throttle.NotPermitted as e:
            assert e.errno == 1 and not lease.released
            try:
                lease.heartbeat()
            except throttle.NotPermitted:
                return e.message
        raise AssertionError("the child released or extended its parent's lease")

    (message,) = run_forked(child, 1)
    assert "another process" in message, message
    assert sem.sem_stat("k").held == 1 and not lease.released, "the parent still holds it"
    assert gcra.try_acquire("c", 0).remaining == 4, "the child's decision counted"
    lease.release()
    assert sem.sem_stat("k").held == 0


def test_priority_classes_and_a_bounded_queue(daemon_factory):
    """thr_sem_acquire_opts from Python: a class-5 waiter that came second is granted before a
    class-0 one; with max_waiters = 2 and drop_lowest, a class-3 arrival drops the class-0 waiter
    (Dropped), a class-1 one is refused (Busy), and the rest are served highest class first."""
    d = daemon_factory("[q]\nkind = semaphore\nmax = 1\ncapacity = 64\nmax_waiters = 2\n"
                       "on_queue_full = drop_lowest\n")
    lim = d.arena().limiter("q")
    held = lim.lease("k", timeout=0)
    got: list = []

    def waiter(name: str, prio: int) -> None:
        try:
            with lim.lease("k", timeout=30, priority=prio):
                got.append(name)
        except throttle.ThrottleError as e:
            got.append("%s:%s" % (name, type(e).__name__))

    def queue(name: str, prio: int, n: int) -> threading.Thread:
        t = threading.Thread(target=waiter, args=(name, prio))
        t.start()
        deadline = time.monotonic() + 10
        while lim.sem_stat("k").pending != n:
            assert time.monotonic() < deadline, "%s never queued" % name
            time.sleep(0.001)
        return t

    low = queue("low", 0, 1)
    high = queue("high", 5, 2)
    mid = queue("mid", 3, 2)  # full: the class-0 waiter is dropped for it
    low.join(10)
    assert got == ["low:Dropped"]
    with pytest.raises(throttle.Busy):
        lim.lease("k", timeout=5, priority=1)  # not above the lowest queued (3): refused
    with pytest.raises(throttle.InvalidArgument):
        lim.lease("k", timeout=5, priority=8)
    held.release()
    high.join(10)
    mid.join(10)
    assert got == ["low:Dropped", "high", "mid"]
