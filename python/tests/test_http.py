"""throttle.http.Client against a real throttled (manual clock): totals across processes and
threads, leases, budgets, composed calls, error mapping, fork safety and the async forms."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

import throttle.errors as te
from throttle.http import Client, lock
from http_daemon import Daemon

LIMITERS = """
[one]
rate = 1/h
burst = 50
capacity = 64

[wide]
rate = 1/h
burst = 100000
capacity = 256

[slow]
rate = 10/s
burst = 1
capacity = 64

[sem]
kind = semaphore
max = 2
capacity = 64

[money]
kind = budget
initial = 10
capacity = 64

[ca]
rate = 1/h
burst = 3
capacity = 64

[cb]
rate = 1/h
burst = 5
capacity = 64

[both]
compose = ca, cb
"""

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def daemon():
    with Daemon(LIMITERS) as d:
        yield d


@pytest.fixture
def client(daemon):
    with Client(daemon.url, timeout=10.0) as c:
        yield c


def test_limiters_lists_every_limiter_with_its_kind(client):
    infos = {i.name: i for i in client.limiters()}
    assert {"one", "wide", "slow", "sem", "money", "ca", "cb"} <= set(infos)
    assert infos["one"].kind == "gcra" and infos["one"].burst == 50
    assert infos["sem"].kind == "semaphore" and infos["sem"].burst == 2
    assert infos["money"].kind == "budget" and infos["money"].initial == 10
    slow = client.limiter("slow").info
    assert slow == infos["slow"] and slow.rate * 10**9 == 10 * slow.period_ns  # 10/s


def test_try_counts_down_and_denies_past_the_burst(client):
    lim = client.limiter("ca")
    got = [lim.try_acquire("countdown") for _ in range(4)]
    assert [d.admitted for d in got] == [True, True, True, False]
    assert [d.remaining for d in got[:3]] == [2, 1, 0]
    assert got[3].retry_after_ns > 0 and got[3].limit == 3
    assert not got[3]  # a denial is falsy, not an exception


def _hammer(client, key, per_thread, threads):
    """THREADS threads, each PER_THREAD tries of KEY on 'one': admitted count."""
    lim = client.limiter("one")
    counts = [0] * threads

    def run(i):
        for _ in range(per_thread):
            if lim.try_acquire(key).admitted:
                counts[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts)


def test_three_processes_of_four_threads_admit_exactly_the_burst(client):
    client.limiter("one").try_acquire("warm", 0)  # the parent's connection is open before fork
    pids, reads = [], []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                n = _hammer(client, "total", 10, 4)
                os.write(w, b"%d\n" % n)
            except BaseException as e:  # report, never run the parent's pytest in the child
                os.write(w, b"error %r\n" % e)
                code = 1
            os._exit(code)
        os.close(w)
        pids.append(pid)
        reads.append(r)
    answers = []
    for pid, r in zip(pids, reads):
        with os.fdopen(r, "rb") as f:
            answers.append(f.read().decode())
        _, st = os.waitpid(pid, 0)
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, answers[-1]
    total = sum(int(a) for a in answers)
    # 120 tries on a burst of 50 with no refill (manual clock): exactly the burst, however the
    # 12 threads interleave.
    assert total == 50, answers
    assert client.limiter("one").try_acquire("total", 0).remaining == 0


def test_fork_child_opens_its_own_connection_and_answers_do_not_cross(client):
    lim = client.limiter("wide")
    lim.try_acquire("fork-parent")
    parent_port = client._local.conn.sock.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            rem = [lim.try_acquire("fork-child").remaining for _ in range(200)]
            port = client._local.conn.sock.getsockname()[1]
            ok = rem == list(range(99999, 99999 - 200, -1))
            os.write(w, b"%d %d\n" % (port, ok))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    mine = [lim.try_acquire("fork-parent").remaining for _ in range(200)]
    with os.fdopen(r, "rb") as f:
        child = f.read().split()
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    port, ok = int(child[0]), int(child[1])
    assert port != parent_port, "the child wrote on its parent's socket"
    assert ok == 1, "the child's answers were not its own key's countdown"
    assert mine == list(range(99998, 99998 - 200, -1))
    assert client._local.conn.sock.getsockname()[1] == parent_port  # parent's still usable


def test_lease_with_block_holds_then_frees_on_exit(client):
    lim = client.limiter("sem")
    with lim.lease("res", amount=2, ttl=30.0) as l:
        assert l.amount == 2
        st = lim.sem_stat("res")
        assert (st.held, st.leases, st.remainder) == (2, 1, 0)
        with pytest.raises(te.WouldBlock):
            lim.lease("res", 1, ttl=30.0, timeout=0)
    assert lim.sem_stat("res").held == 0
    l.release()  # idempotent on the Python side: no request, no error
    with lock(client, "sem", "res", amount=1):
        assert lim.sem_stat("res").held == 1
    assert lim.sem_stat("res").held == 0
    with lock(client, "sem"):  # the seed's form: the key is the limiter's name
        assert lim.sem_stat("sem").held == 1
    assert lim.sem_stat("sem").held == 0


def test_lease_expires_without_heartbeat_and_heartbeat_keeps_it(client, daemon):
    lim = client.limiter("sem")
    kept = lim.lease("ttl", 1, ttl=1.0, timeout=0)
    lost = lim.lease("ttl", 1, ttl=1.0, timeout=0)
    assert lim.sem_stat("ttl").held == 2
    daemon.advance(0.6)
    kept.heartbeat()  # its last ttl: 1 s from now
    daemon.advance(0.6)  # lost: 1.2 s old, past its ttl; kept: 0.6 s into its new second
    st = lim.sem_stat("ttl")
    assert (st.held, st.leases) == (1, 1)
    with pytest.raises(te.Expired):
        lost.release()
    kept.release()
    assert lim.sem_stat("ttl").held == 0


def test_budget_spend_short_add_and_stat(client):
    lim = client.limiter("money")
    r = lim.spend("acct", 4)
    assert (r.balance, r.shortfall) == (6, 0)
    with pytest.raises(te.WouldBlock) as ei:
        lim.spend("acct", 10)
    assert ei.value.result.shortfall == 4 and ei.value.result.balance == 6
    assert lim.add("acct", 5).balance == 11
    st = lim.budget_stat("acct")
    assert (st.balance, st.initial, st.waiters) == (11, 10, 0)
    assert lim.budget_stat("never-used").balance == 10


def test_compose_is_all_or_nothing_and_group_is_the_same(client):
    a, b = client.limiter("ca"), client.limiter("cb")
    r = client.compose_try([(a, "k", 2), ("cb", "k", 2)])
    assert r.admitted and r.denied == -1 and r.remaining == (1, 3)
    r = client.compose_try([(a, "k", 2), (b, "k", 2)])
    assert not r.admitted and r.denied == 0 and r.retry_after_ns > 0
    assert b.try_acquire("k", 0).remaining == 3  # the denied call consumed nothing of cb
    g = client.group("both")
    r = g.try_acquire([("g", 3), ("g", 5)])
    assert r.admitted and r.remaining == (0, 0)
    assert not g.try_acquire([("g", 1), ("g", 0)]).admitted
    with pytest.raises(te.Timeout):
        client.compose_acquire([(a, "g", 1)], timeout=0.05)


def test_errors_are_mapped_from_the_json_body(client):
    with pytest.raises(te.NotFound) as ei:
        client.limiter("no-such-limiter")
    assert ei.value.errno == 2
    with pytest.raises(te.NotFound):
        client.group("no-such-group").try_acquire([("k", 1)])
    lim = client.limiter("ca")
    with pytest.raises(te.CostTooHigh) as ei:
        lim.try_acquire("k", 4)
    assert ei.value.errno == 34 and ei.value.message
    with pytest.raises(te.InvalidArgument):
        lim.try_acquire("")
    with pytest.raises(te.KeyTooLong):
        lim.try_acquire("x" * 105)
    assert lim.try_acquire("x" * 104, 0).admitted  # 104 bytes is still a key
    with pytest.raises(te.NotSupported):
        lim.lease("k", 1, ttl=1.0, timeout=0)
    with pytest.raises(te.InvalidArgument):  # refused here, never sent
        lim.try_acquire(b"\xff\xfe")
    with pytest.raises(te.InvalidArgument):
        lim.try_acquire("k", 1.5)


def test_bad_or_missing_token_is_unauthorized():
    with Daemon(LIMITERS, token=TOKEN, name="pyhttptok") as d:
        for c in (Client(d.url), Client(d.url, token="wrong")):
            with c, pytest.raises(te.Unauthorized):
                c.limiters()
        with Client(d.url, token=TOKEN) as c:
            assert c.limiter("ca").try_acquire("t").admitted


def test_unix_socket_url(daemon):
    with Daemon(LIMITERS, unix=True, name="pyhttpunix") as d, Client(d.url) as c:
        assert c.limiter("ca").try_acquire("u").remaining == 2


def test_async_forms_do_not_block_the_loop(client):
    sem = client.limiter("sem")

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        holder = await sem.lease_async("async", 2, ttl=30.0, timeout=0)
        tick = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        # Released from the loop 0.3 s from now: only if the waiting lease_async leaves it free.
        loop.call_later(0.3, lambda: asyncio.ensure_future(asyncio.to_thread(holder.release)))
        t0 = time.monotonic()
        async with sem.lease_async("async", 1, ttl=30.0, timeout=5.0) as l:
            waited = time.monotonic() - t0
            assert l.amount == 1
        ok = await client.limiter("slow").acquire_async("async", 1, timeout=5.0)
        budget = client.limiter("money")
        spend = asyncio.ensure_future(budget.spend_async("async-b", 15, timeout=5.0))
        await asyncio.sleep(0.1)
        assert not spend.done()
        await asyncio.to_thread(budget.add, "async-b", 5)
        spent = await spend
        stop.set()
        await tick
        return ticks, waited, ok, spent

    ticks, waited, ok, spent = asyncio.run(main())
    assert waited >= 0.25
    assert ticks >= 15, "the event loop was blocked while a request waited"
    assert ok.admitted
    assert spent.balance == 0  # (waited_ns is arena time: 0 on the manual clock)
    assert client.limiter("sem").sem_stat("async").held == 0


def test_a_connection_the_server_closed_when_idle_is_reopened():
    with Daemon(LIMITERS, name="pyhttpidle", daemon_extra="http_timeout_ms = 100\n") as d, \
            Client(d.url) as c:
        lim = c.limiter("wide")
        first = c._local.conn.sock.getsockname()[1]
        time.sleep(1.6)  # past the server's idle deadline (libmicrohttpd's: whole seconds)
        assert lim.try_acquire("idle").remaining == 99999
        assert c._local.conn.sock.getsockname()[1] != first  # a new connection answered


def test_threads_have_their_own_connections_and_close_closes_them(client):
    lim = client.limiter("wide")
    ports = set()

    def run():
        lim.try_acquire("threads", 0)
        ports.add(client._local.conn.sock.getsockname()[1])

    ts = [threading.Thread(target=run) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lim.try_acquire("threads", 0)
    ports.add(client._local.conn.sock.getsockname()[1])
    assert len(ports) == 5
    conn = client._local.conn
    client.close()
    assert conn.sock is None
    assert lim.try_acquire("threads", 0).admitted  # reopens


def test_acquire_waits_for_its_place_or_times_out_at_once(client, daemon):
    lim = client.limiter("slow")  # 10/s, burst 1
    assert lim.acquire("wait", timeout=0).admitted
    with pytest.raises(te.Timeout) as ei:
        lim.acquire("wait", timeout=0.05)  # due in 100 ms: more than allowed, nothing taken
    assert 0 < ei.value.retry_after_ns <= 100_000_000
    # The place is due 100 ms of arena time from now; the manual clock gets there 0.3 s of real
    # time from now, and the server holds the answer until then.
    timer = threading.Timer(0.3, daemon.advance, (0.1,))
    timer.start()
    t0 = time.monotonic()
    d = lim.acquire("wait", timeout=1.0)
    waited = time.monotonic() - t0
    timer.join()
    assert d.admitted and waited >= 0.25


def test_group_acquire_and_limiter_info_of_a_group_member(client):
    g = client.group("both")
    r = g.acquire([("ga", 1), ("ga", 1)], timeout=1.0)
    assert r.admitted and r.remaining == (2, 4)
    with pytest.raises(te.Timeout):
        g.acquire([("ga", 3), ("ga", 1)], timeout=0.05)
    assert client.limiter("ca").try_acquire("ga", 0).remaining == 2  # nothing taken


def test_http_and_shared_memory_share_one_limit_exactly(client, daemon):
    """A Python process deciding in shared memory (throttle.Arena) and over HTTP on one key: one
    bucket. Alternating, each side sees the other's decisions in `remaining`; from threads of
    both, exactly the burst is admitted; after the clock moves, exactly the refill."""
    import throttle

    with throttle.Arena(daemon.arena) as arena:
        shm, web = arena.limiter("one"), client.limiter("one")
        left = []
        for i in range(50):
            d = (web if i % 2 else shm).try_acquire("mixed-a")
            assert d.admitted, (i, d)
            left.append(d.remaining)
        assert left == list(range(49, -1, -1))  # one countdown across both sides
        assert not shm.try_acquire("mixed-a") and not web.try_acquire("mixed-a")

        counts = {"shm": 0, "web": 0}
        lock_ = threading.Lock()

        def run(side, lim):
            n = sum(1 for _ in range(40) if lim.try_acquire("mixed-b").admitted)
            with lock_:
                counts[side] += n

        ts = [threading.Thread(target=run, args=(s, lim))
              for s, lim in (("shm", shm), ("web", web), ("shm", shm), ("web", web))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert counts["shm"] + counts["web"] == 50, counts  # 160 tries, burst 50, no refill
        daemon.advance(2 * 3600)  # rate 1/h: two tokens back
        got = [shm.try_acquire("mixed-b").admitted, web.try_acquire("mixed-b").admitted,
               shm.try_acquire("mixed-b").admitted, web.try_acquire("mixed-b").admitted]
        assert got == [True, True, False, False], got


def test_hold_cap_and_feedback_over_http(client):
    one = client.limiter("one")  # 1/h, burst 50
    held = one.hold("fb-hold", 5)
    assert not held.admitted and held.retry_after_ns == 5_000_000_000 and not held.shortened
    assert not one.try_acquire("fb-hold")
    assert one.cap("fb-cap", 2).remaining == 2
    assert one.try_acquire("fb-cap", 2) and not one.try_acquire("fb-cap")
    r = one.apply_feedback("fb-h", {"Retry-After": "7", "Server": "x"})
    assert r.retry_after_ns == 7_000_000_000
    with pytest.raises(te.InvalidArgument) as e:
        one.apply_feedback("fb-bad", {"RateLimit": "nonsense;;"})
    assert "RateLimit" in str(e.value)
    assert one.try_acquire("fb-bad", 50), "a refused feedback held the key"
    with pytest.raises(te.NotSupported):
        client.limiter("money").hold("k", 1)


def test_overload_over_http(client):
    client.limiter("one").overload(3)
    with pytest.raises(te.InvalidArgument):
        client.limiter("one").overload(-1)
    with pytest.raises(te.NotFound):
        client.limiter("nope").overload()
