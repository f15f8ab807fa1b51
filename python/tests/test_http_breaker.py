"""Circuit breakers over HTTP (throttle.http.Client against a real throttled, manual clock):
trip, refuse, probe, close; the with block's outcomes; reports checked (by the client, and by
the daemon when the client's checks are bypassed); a ticket past its ttl is given up by the
daemon."""
from __future__ import annotations

import pytest

import throttle.errors as te
from throttle.http import Client
from breaker_scenario import (BREAKER, interrupt_ignored, reports_checked, trip,
                              trip_probe_close, wrong_kind)
from http_daemon import Daemon


@pytest.fixture
def daemon():
    with Daemon(BREAKER, name="pybrk") as d:
        yield d


@pytest.fixture
def client(daemon):
    with Client(daemon.url, timeout=10.0) as c:
        yield c


def test_breaker_trips_probes_and_closes(daemon, client):
    lim = client.limiter("brk")
    assert lim.info.kind == "breaker"
    trip_probe_close(lim, daemon.advance)


def test_breaker_reports_checked(client):
    reports_checked(client.limiter("brk"), client.limiter("other"))
    wrong_kind(client.limiter("rate"))


def test_breaker_interrupt_gives_the_probe_back(daemon, client):
    interrupt_ignored(client.limiter("brk"), daemon.advance)


def test_breaker_daemon_checks_reports(client):
    t = client.limiter("brk").breaker_allow("d")
    path = "/v1/limiters/brk/breaker/report"
    with pytest.raises(te.InvalidArgument, match="'maybe' is not success"):
        client._request("POST", path, {"ticket": t._handle, "outcome": "maybe"})
    with pytest.raises(te.NotFound, match="no ticket '0123"):
        client._request("POST", path, {"ticket": "0123456789abcdef" * 2, "outcome": "success"})
    assert t.report("success") is True
    with pytest.raises(te.NotFound):
        client._request("POST", path, {"ticket": t._handle, "outcome": "success"})


def test_breaker_ticket_past_its_ttl_is_given_up(daemon, client):
    lim = client.limiter("brk")
    trip(lim, "p")
    daemon.advance(11)
    probe = lim.breaker_allow("p", ttl=1.0)
    assert probe.probe
    daemon.advance(2)  # < probe_timeout: the daemon gave the probe up at its ttl
    with lim.breaker("p") as again:
        assert again.probe
    with pytest.raises(te.NotFound, match="past its ttl|forgotten"):
        probe.report("failure")
    assert probe.reported == "failure", "the daemon answered: the ticket is spent"
    assert lim.breaker_stat("p").state == "closed"
    with pytest.raises(te.InvalidArgument):
        lim.breaker_allow("p", ttl=0)
