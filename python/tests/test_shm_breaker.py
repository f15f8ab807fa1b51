"""Circuit breakers on shared memory (throttle.Arena): trip, refuse, probe, close; the with
block's outcomes; reports checked; a fork child cannot report its parent's ticket; and the same
breaker shared with a client over HTTP."""
from __future__ import annotations

import os
import socket

import pytest

import throttle
import throttle.errors as te
from throttle.http import Client
from breaker_scenario import (BREAKER, interrupt_ignored, reports_checked, trip,
                              trip_probe_close, wrong_kind)


def test_breaker_trips_probes_and_closes(daemon_factory):
    arena = daemon_factory(BREAKER).arena()
    lim = arena.limiter("brk")
    assert lim.info.kind == "breaker"
    assert lim.breaker_stat("new") == throttle.BreakerStatus("closed", 0, 0, 0, 0, 0, 0)
    trip_probe_close(lim, arena.advance_clock)


def test_breaker_reports_checked(daemon_factory):
    arena = daemon_factory(BREAKER).arena()
    reports_checked(arena.limiter("brk"), arena.limiter("other"))
    wrong_kind(arena.limiter("rate"))


def test_breaker_interrupt_gives_the_probe_back(daemon_factory):
    arena = daemon_factory(BREAKER).arena()
    interrupt_ignored(arena.limiter("brk"), arena.advance_clock)


def test_breaker_fork_child_cannot_report_the_parents_ticket(daemon_factory, run_forked):
    arena = daemon_factory(BREAKER).arena()
    lim = arena.limiter("brk")
    t = lim.breaker_allow("f")

    def child(i: int) -> str:
        try:
            t.report("failure")
        except te.InvalidArgument:
            return "refused"
        return "reported"

    assert run_forked(child, 1) == ["refused"]
    assert t.reported is None
    assert t.report("failure") is True, "the parent's ticket is still good"
    assert lim.breaker_stat("f").consecutive_failures == 1


def test_breaker_shared_with_http_clients(daemon_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = daemon_factory(BREAKER, daemon="http = 127.0.0.1:%d" % port)
    arena = d.arena()
    lim = arena.limiter("brk")
    with Client("http://127.0.0.1:%d" % port, timeout=10.0) as c:
        hl = c.limiter("brk")
        trip(hl, "x")  # over HTTP
        assert lim.breaker_stat("x").state == "open"
        with pytest.raises(throttle.WouldBlock):
            lim.breaker_allow("x")
        arena.advance_clock(11)
        probe = lim.breaker_allow("x")  # in shared memory
        assert probe.probe
        with pytest.raises(throttle.WouldBlock) as ei:
            hl.breaker_allow("x")
        assert ei.value.status.state == "half-open"
        assert probe.report("success")
        assert hl.breaker_stat("x").state == "closed"
    assert os.path.exists(d.arena_path)
