"""Circuit breakers (kind = breaker): the ticket a breaker's allow hands out, one class for both
sources (throttle.Arena's limiters and throttle.http.Client's).

A ticket is reported once, with its outcome: ``ticket.report("success" | "failure" |
"ignore")``, or by its ``with`` block::

    with lim.breaker("card-api") as call:      # throttle.WouldBlock (.status) when refused
        pay()                                  # raises: "failure"; returns: "success"

An ``Exception`` out of the block reports "failure"; a ``BaseException`` that is not one
(KeyboardInterrupt, SystemExit, asyncio.CancelledError) reports "ignore": the call was not
judged, and a probe's place is given back. A report made inside the block (``call.report(...)``)
is the one that counts; the block's end then reports nothing.

What the ticket holds is its source's: a ``struct thr_breaker_ticket`` (shared memory: it points
into this process, so a fork child cannot report its parent's ticket, InvalidArgument), or the id
of the ticket the daemon holds for us (HTTP: any process that has the id may report it).
"""
from __future__ import annotations

import errno
import os
import threading
from typing import Any, Callable, Optional, Type, Union

from .errors import InvalidArgument, ThrottleError, TransportError
from .results import BreakerStatus

Key = Union[str, bytes]
OUTCOMES = ("success", "failure", "ignore")


def outcome_name(outcome: Any) -> str:
    """OUTCOME checked: one of OUTCOMES, else InvalidArgument naming it."""
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        raise InvalidArgument(errno.EINVAL, "outcome: %r is not success, failure or ignore"
                              % (outcome,))
    return outcome


class BreakerTicket:
    """A call a breaker let through (Limiter.breaker_allow). ``probe``: a half-open breaker's
    probe, whose outcome decides it. ``untracked``: let through unrecorded (a full table with
    on_full = allow; its report is ignored). ``status``: the key's state the allow left, then the
    one the report left (HTTP). ``reported``: the outcome reported, None while the call is out;
    ``counted``: whether that report counted (False: the breaker had moved on)."""

    def __init__(self, limiter: Any, key: Key, probe: bool, untracked: bool,
                 status: BreakerStatus, handle: Any, expires_ns: Optional[int] = None) -> None:
        self.limiter = limiter
        self.key = key
        self.probe = probe
        self.untracked = untracked
        self.status = status
        self.expires_ns = expires_ns  # HTTP: when the daemon gives it up (time.monotonic_ns)
        self.reported: Optional[str] = None
        self.counted: Optional[bool] = None
        self._handle = handle
        self._mutex = threading.Lock()
        self._pid = os.getpid()

    def report(self, outcome: str) -> bool:
        """Report the call's OUTCOME ("success", "failure" or "ignore"), once. True: counted;
        False: ignored (the breaker tripped or gave the probe up since, or untracked)."""
        return bool(self.limiter.breaker_report(self, outcome))

    def _spend(self, limiter: Any, outcome: str, call: Callable[[Any, str], bool]) -> bool:
        """The source's report CALL(handle, outcome), made once: InvalidArgument for another
        limiter's ticket, a ticket reported already, or a bad outcome."""
        outcome_name(outcome)
        if limiter is not self.limiter:
            raise InvalidArgument(errno.EINVAL, "ticket of limiter %s reported on %s" % (
                self.limiter.name, limiter.name))
        if os.getpid() != self._pid:
            # a fork child: not under _mutex, which a thread of the parent may have held at the
            # fork (shared memory refuses the parent's ticket; over HTTP the id is good anywhere)
            return self._record(outcome, call(self._handle, outcome))
        with self._mutex:
            if self.reported is not None:
                raise InvalidArgument(errno.EINVAL, "ticket reported already (%s)"
                                      % self.reported)
            try:
                return self._record(outcome, call(self._handle, outcome))
            except TransportError:
                raise  # not known to be reported: a later report may try again
            except ThrottleError:
                self.reported = outcome  # the source answered: the ticket is spent
                raise

    def _record(self, outcome: str, counted: bool) -> bool:
        self.reported, self.counted = outcome, counted
        return counted

    def __enter__(self) -> "BreakerTicket":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], *rest: Any) -> None:
        if self.reported is not None:
            return
        outcome = ("success" if exc_type is None else
                   "failure" if issubclass(exc_type, Exception) else "ignore")
        try:
            self.report(outcome)
        except ThrottleError:
            if exc_type is None:  # never hide the block's own exception behind ours
                raise

    def __repr__(self) -> str:
        return "<throttle.BreakerTicket %s %r%s%s>" % (
            self.limiter.name, self.key, " probe" if self.probe else "",
            " reported %s" % self.reported if self.reported else "")
