"""A downstream's word applied to a shared key from Python (Limiter.hold, cap, apply_feedback),
on a manual-clock arena: the same exact boundaries as the C tests, seen across processes."""
from __future__ import annotations

import pytest

import throttle

GCRA = "[api]\nrate = 10/s\nburst = 5\ncapacity = 64\n"  # T = 100 ms


def test_hold_exact_and_seen_by_another_process(daemon_factory, run_forked):
    d = daemon_factory(GCRA)
    arena = d.arena()
    lim = arena.limiter("api")
    held = lim.hold("k", 2.0)
    assert isinstance(held, throttle.Held)
    assert held == throttle.Held(False, 5, 0, 2_000_000_000, 2_400_000_000, False)
    # a forked process opening its own arena sees the hold
    assert run_forked(lambda _i: d.arena().limiter("api").try_acquire("k").admitted, 2) == \
        [False, False]
    arena.advance_clock(ns=2_000_000_000 - 1)
    assert not lim.try_acquire("k")
    arena.advance_clock(ns=1)
    assert lim.try_acquire("k") and not lim.try_acquire("k")


def test_cap_and_headers(daemon_factory):
    d = daemon_factory(GCRA)
    lim = d.arena().limiter("api")
    assert lim.cap("c", 2).remaining == 2
    assert lim.try_acquire("c", 2) and not lim.try_acquire("c")
    r = lim.apply_feedback("f", {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3",
                                 "Content-Type": "text/html"})
    assert r.retry_after_ns == 3_000_000_000 and not r.shortened
    r = lim.apply_feedback("t", [("x-ratelimit-remaining-tokens", "0"),
                                 ("x-ratelimit-reset-tokens", "1s")], tokens=True)
    assert r.retry_after_ns == 1_000_000_000
    assert lim.apply_feedback("n", [("x-ratelimit-remaining-tokens", "0")]).remaining == 5
    assert lim.hold("long", 3600).shortened, "past B*T + max_reserve (60 s): shortened"


def test_malformed_header_names_it_and_applies_nothing(daemon_factory):
    d = daemon_factory(GCRA + "[win]\nkind = window\nlimit = 3\nwindow = 1s\ncapacity = 8\n")
    lim = d.arena().limiter("api")
    with pytest.raises(throttle.InvalidArgument) as e:
        lim.apply_feedback("m", {"Retry-After": "30", "X-RateLimit-Reset": "soon"})
    assert "X-RateLimit-Reset" in str(e.value)
    assert lim.try_acquire("m", 5), "a refused feedback held the key"
    with pytest.raises(throttle.InvalidArgument):
        lim.apply_feedback("m", {"Retry-After": 30})
    with pytest.raises(throttle.InvalidArgument):
        lim.hold("m", -1)
    with pytest.raises(throttle.NotSupported):
        d.arena().limiter("win").hold("m", 1)


def test_overload_takes_counts_and_refuses_negative_ones(daemon_factory):
    d = daemon_factory(GCRA)
    lim = d.arena().limiter("api")
    lim.overload()
    lim.overload(4)
    with pytest.raises(throttle.InvalidArgument):
        lim.overload(-1)
