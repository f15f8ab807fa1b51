"""The circuit breaker checks both sources pass alike (test_shm_breaker.py on throttle.Arena,
test_http_breaker.py on throttle.http.Client): LIM is a limiter of BREAKER's config, ADVANCE
moves the arena's manual clock by seconds."""
from __future__ import annotations

from typing import Any, Callable

import pytest

import throttle.errors as te

# two failures in a row trip it; open for 10 s; one probe at a time; its success closes it
BREAKER = ("[brk]\nkind = breaker\nfailures = 2\ncooldown = 10s\nprobes = 1\n"
           "probe_timeout = 5s\ncapacity = 64\n\n"
           "[other]\nkind = breaker\nfailures = 1\ncapacity = 64\n\n"
           "[rate]\nrate = 1/s\nburst = 5\ncapacity = 64\n")


class Boom(Exception):
    pass


def trip(lim: Any, key: str) -> None:
    """Two failures: the first reported by hand, the second by a block that raised."""
    t = lim.breaker_allow(key)
    assert not t.probe and not t.untracked and t.status.state == "closed"
    assert t.report("failure") is True and t.reported == "failure" and t.counted is True
    with pytest.raises(Boom):
        with lim.breaker(key):
            raise Boom()
    assert lim.breaker_stat(key).state == "open"


def trip_probe_close(lim: Any, advance: Callable[[float], None]) -> None:
    trip(lim, "api")
    with pytest.raises(te.WouldBlock) as ei:
        lim.breaker_allow("api")
    assert ei.value.status.state == "open"  # type: ignore[attr-defined]
    assert ei.value.retry_after_ns > 9 * 10**9  # type: ignore[attr-defined]
    st = lim.breaker_stat("api")
    assert (st.state, st.consecutive_failures) == ("open", 2) and st.retry_after > 9
    advance(11)
    with lim.breaker("api") as probe:
        assert probe.probe and probe.status.state == "half-open"
        assert probe.status.probes_in_flight == 1
        with pytest.raises(te.WouldBlock) as ei:
            lim.breaker_allow("api")  # the one probe is out
        assert ei.value.status.state == "half-open"  # type: ignore[attr-defined]
    assert (probe.reported, probe.counted) == ("success", True)
    assert lim.breaker_stat("api").state == "closed"
    with lim.breaker("api") as call:
        assert not call.probe
    assert lim.breaker_stat("api").consecutive_failures == 0


def reports_checked(lim: Any, other: Any) -> None:
    t = lim.breaker_allow("k")
    with pytest.raises(te.InvalidArgument, match="'maybe' is not success, failure or ignore"):
        t.report("maybe")
    with pytest.raises(te.InvalidArgument, match="ticket of limiter brk reported on other"):
        other.breaker_report(t, "failure")
    assert t.reported is None, "refused reports spend nothing"
    assert t.report("ignore") is True
    with pytest.raises(te.InvalidArgument, match="reported already"):
        t.report("failure")
    with lim.breaker("k") as call:  # a report in the block is the one that counts
        call.report("failure")
    assert call.reported == "failure"
    assert lim.breaker_stat("k").consecutive_failures == 1
    with pytest.raises(te.InvalidArgument):
        lim.breaker_report("not a ticket", "success")


def interrupt_ignored(lim: Any, advance: Callable[[float], None]) -> None:
    """A BaseException out of the block is not the downstream's failure: the probe's place is
    given back, the breaker stays half-open."""
    trip(lim, "i")
    advance(11)
    with pytest.raises(KeyboardInterrupt):
        with lim.breaker("i") as probe:
            raise KeyboardInterrupt()
    assert probe.reported == "ignore"
    st = lim.breaker_stat("i")
    assert (st.state, st.probes_in_flight) == ("half-open", 0)
    with lim.breaker("i") as again:
        assert again.probe
    assert lim.breaker_stat("i").state == "closed"


def wrong_kind(rate: Any) -> None:
    with pytest.raises(te.NotSupported):
        rate.breaker_allow("k")
    with pytest.raises(te.NotSupported):
        rate.breaker_stat("k")
