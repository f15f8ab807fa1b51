"""Budgets (spend, add, shortfall, a queued spend granted by an add) and composed calls (all or
nothing, named groups) on shared memory."""
from __future__ import annotations

import threading
import time

import pytest

import throttle

BUDGET = "[b]\nkind = budget\ninitial = 10\ncapacity = 64\n"
COMPOSE = ("[a]\nrate = 1/s\nburst = 3\ncapacity = 64\n"
           "[bb]\nkind = budget\ninitial = 2\ncapacity = 64\n"
           "[grp]\ncompose = a, bb\n")
UINT64_MAX = (1 << 64) - 1


def test_budget_spend_add_shortfall(daemon_factory):
    lim = daemon_factory(BUDGET).arena().limiter("b")
    assert lim.info.kind == "budget" and lim.info.initial == 10
    assert lim.budget_stat("k").balance == 10, "a new key has the initial balance"
    assert lim.spend("k", 4).balance == 6
    with pytest.raises(throttle.WouldBlock) as ei:
        lim.spend("k", 7)
    assert ei.value.result == throttle.BudgetResult(balance=6, shortfall=1, waiters=0,
                                                    waited_ns=0)
    assert lim.budget_stat("k").balance == 6, "a refused spend spends nothing"
    assert lim.add("k", 5).balance == 11
    assert lim.spend("k", 7).balance == 4
    st = lim.budget_stat("k")
    assert (st.balance, st.initial, st.waiters) == (4, 10, 0)


def test_budget_queued_spend_granted_by_add(daemon_factory):
    arena = daemon_factory(BUDGET).arena()
    lim = arena.limiter("b")
    got = []
    t = threading.Thread(target=lambda: got.append(lim.spend("q", 15, timeout=None)))
    t.start()
    deadline = time.monotonic() + 5
    while lim.budget_stat("q").waiters != 1:
        assert time.monotonic() < deadline, "the spend never queued"
        time.sleep(0.005)
    st = lim.budget_stat("q")
    assert (st.need, st.head_need, st.balance) == (15, 15, 10)
    assert not got, "a spend of 15 from 10 went through"
    arena.advance_clock(0.25)  # arena time: what the queued spend's waited_ns counts
    lim.add("q", 10)
    t.join(5)
    assert not t.is_alive() and got[0].balance == 5 and got[0].waited_ns == 250_000_000


def test_budget_spend_timeout_on_a_real_clock(daemon_factory):
    lim = daemon_factory(BUDGET, clock="monotonic").arena().limiter("b")
    t0 = time.monotonic()
    with pytest.raises(throttle.Timeout) as ei:
        lim.spend("k", 11, timeout=0.05)
    assert 0.04 <= time.monotonic() - t0 < 5
    assert ei.value.errno == 110 and ei.value.result.shortfall == 1
    assert lim.budget_stat("k").balance == 10


def test_compose_all_or_nothing(daemon_factory):
    arena = daemon_factory(COMPOSE).arena()
    a, bb = arena.limiter("a"), arena.limiter("bb")
    members = [(a, "t", 1), (bb, "t", 1)]
    assert arena.compose_try(members) == throttle.ComposeResult(True, -1, 0, (2, 1))
    assert arena.compose_acquire(members, timeout=0) == throttle.ComposeResult(True, -1, 0,
                                                                               (1, 0))
    denied = arena.compose_try(members)
    assert not denied and denied.denied == 1 and denied.retry_after_ns == UINT64_MAX
    assert a.try_acquire("t", 0).remaining == 1, "the admitting member was not consumed"
    assert bb.budget_stat("t").balance == 0
    with pytest.raises(throttle.CostTooHigh):
        arena.compose_try([(a, "u", 4), (bb, "u", 1)])
    assert bb.budget_stat("u").balance == 2, "an error consumes nothing"
    with pytest.raises(throttle.InvalidArgument):
        arena.compose_try([])
    with pytest.raises(throttle.InvalidArgument):
        arena.compose_try([(a, "t", 1), (a, "t", 1)])  # the same key twice: the library's


def test_group_by_name(daemon_factory):
    arena = daemon_factory(COMPOSE).arena()
    g = arena.group("grp")
    assert g.size == 2
    assert g.try_acquire([("t", 2), (None, 2)]) == throttle.ComposeResult(True, -1, 0, (1, 0))
    denied = g.try_acquire([("t", 1), (None, 1)])
    assert not denied and denied.denied == 1
    assert arena.limiter("a").try_acquire("t", 0).remaining == 1
    arena.limiter("bb").add("t", 1)
    assert g.acquire([("t", 1), (None, 1)], timeout=0).remaining == (0, 0)
    with pytest.raises(throttle.InvalidArgument):
        g.try_acquire([("t", 1)])
    with pytest.raises(throttle.NotFound):
        arena.group("nope")


def test_budget_spend_priority(daemon_factory):
    """thr_budget_spend_opts from Python: a class-5 spender that came second is served first."""
    d = daemon_factory("[b]\nkind = budget\ninitial = 0\ncapacity = 64\n")
    lim = d.arena().limiter("b")
    got: list = []

    def spender(name: str, prio: int) -> None:
        lim.spend("k", 1, timeout=30, priority=prio)
        got.append(name)

    ts = []
    for n, (name, prio) in enumerate((("low", 0), ("high", 5))):
        t = threading.Thread(target=spender, args=(name, prio))
        t.start()
        ts.append(t)
        deadline = time.monotonic() + 10
        while lim.budget_stat("k").waiters != n + 1:
            assert time.monotonic() < deadline, "%s never queued" % name
            time.sleep(0.001)
    with pytest.raises(throttle.InvalidArgument):
        lim.spend("k", 1, timeout=1, priority=8)
    lim.add("k", 1)
    ts[1].join(10)
    assert got == ["high"]
    lim.add("k", 1)
    ts[0].join(10)
    assert got == ["high", "low"]
