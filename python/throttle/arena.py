"""The shared-memory source: an arena of the daemon mapped through libthrottle-client (ctypes).

Every decision is made in this process, by the C library, with a CAS in the arena: the same
limits hold for Python and C processes of the host alike.

Threads: the C library is thread-safe and ctypes releases the GIL for each call, so the calls
that wait (acquire, lease, spend with a timeout, compose_acquire, a group's acquire) block only
the calling thread. Arena.close() (and Limiter/Group close) must not run while another thread
still uses the arena, as thr_arena_close(3) says.

fork(): a child may keep using its parent's Arena, Limiter and Group objects (the C library
registers the child's own records on its first call). A Lease taken by the parent stays the
parent's: the child's release() or heartbeat() raises NotPermitted (the library's -EPERM) and
leaves it held. The only Python-side state that a fork could leave wrong is the lock guarding
an Arena's table of opened limiters; it is made anew in the child (os.register_at_fork).

Async: see throttle.aio, whose functions are also the methods *_async here.
"""
from __future__ import annotations

import errno
import functools
import math
import os
import threading
import weakref
from ctypes import byref, c_char_p, c_uint64, c_void_p, cast
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union
from typing import cast as _tcast

from . import _lib
from .breaker import BreakerTicket
from .errors import InvalidArgument, ThrottleError
from .results import (BreakerStatus, BudgetResult, BudgetStat, ComposeResult, Decision, Held,
                      LimiterInfo, SemStat)

Key = Union[str, bytes]
NS = 1_000_000_000

_arenas: "weakref.WeakSet[Arena]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for a in list(_arenas):
        a._lock = threading.Lock()
        a._inflight = 0  # the parent's other threads, in calls at the fork, are not here


_F = TypeVar("_F", bound=Callable[..., Any])


def _in_arena(arena_of: Callable[[Any], "Arena"]) -> Callable[[_F], _F]:
    """Decorate a method that calls the library: the call counts as in flight on its Arena, so
    that Arena.close() defers the unmap (and the handles' frees) until it returns, instead of
    pulling the arena from under it (a use after free: a crash or a wrong answer)."""
    def deco(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            arena = arena_of(self)
            arena._enter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                arena._leave()
        return _tcast(_F, wrapper)
    return deco


_self = (lambda obj: obj)
_owner = (lambda obj: obj.arena)
_owner2 = (lambda obj: obj.limiter.arena)


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------------
# Argument conversion: bad input is refused here with InvalidArgument (EINVAL) naming it, before
# anything reaches the library; key lengths are left to the library so that its messages hold.

def _key(key: Key) -> bytes:
    if isinstance(key, str):
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: no UTF-8 for it
            raise InvalidArgument(errno.EINVAL, "key %.40r is not encodable in UTF-8: %s"
                                  % (key, e)) from None
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgument(errno.EINVAL, "key must be str or bytes, not %s" % type(key).__name__)


def _uint(value: Any, what: str, top: int = _lib.UINT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(errno.EINVAL,
                              "%s must be an int, not %s" % (what, type(value).__name__))
    if value < 0 or value > top:
        raise InvalidArgument(errno.EINVAL, "%s must be 0..%d, not %d" % (what, top, value))
    return value


def _ns(seconds: Optional[float], what: str) -> int:
    """Seconds (float or int) to ns; None or infinity: without bound (UINT64_MAX)."""
    if seconds is None:
        return _lib.UINT64_MAX
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidArgument(errno.EINVAL, "%s must be seconds (a number) or None, not %s" %
                              (what, type(seconds).__name__))
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgument(errno.EINVAL, "%s must be >= 0 seconds, not %r" % (what, seconds))
    if math.isinf(seconds) or seconds * NS >= _lib.UINT64_MAX:
        return _lib.UINT64_MAX
    return int(round(seconds * NS))


def _name(name: str, what: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(errno.EINVAL, "%s must be a non-empty str, not %r" % (what, name))
    raw = name.encode("utf-8")
    if b"\0" in raw:
        raise InvalidArgument(errno.EINVAL, "%s must not contain NUL: %r" % (what, name))
    return raw


def _decision(r: _lib.Result, admitted: bool) -> Decision:
    return Decision(admitted=admitted, limit=r.limit, remaining=r.remaining,
                    retry_after_ns=r.retry_after_ns, reset_after_ns=r.reset_after_ns)


def _held(r: _lib.Result, rc: int) -> Held:
    return Held(admitted=bool(r.admitted), limit=r.limit, remaining=r.remaining,
                retry_after_ns=r.retry_after_ns, reset_after_ns=r.reset_after_ns,
                shortened=rc == 1)


def _header_pairs(headers: Any) -> List[Tuple[str, str]]:
    """A response's headers: a mapping (dict, requests' or http.client's headers) or pairs."""
    items = headers.items() if hasattr(headers, "items") else headers
    out = []
    for pair in items:
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgument(errno.EINVAL, "headers: names and values are str, got %r"
                                  % (pair,))
        out.append((name, value))
    return out


def _budget(r: _lib.BudgetResultT) -> BudgetResult:
    return BudgetResult(balance=r.balance, shortfall=r.shortfall, waiters=r.waiters,
                        waited_ns=r.waited_ns)


def _compose(r: _lib.ComposeResultT, n: int, rc: int) -> ComposeResult:
    admitted = rc == 1
    return ComposeResult(admitted=admitted, denied=-1 if admitted else int(r.denied),
                         retry_after_ns=0 if admitted else r.retry_after_ns,
                         remaining=tuple(r.remaining[i] for i in range(n)))


def _breaker_status(st: _lib.BreakerStatusT) -> BreakerStatus:
    state = _lib.BREAKER_STATES[st.state] if st.state < 3 else "corrupt"
    return BreakerStatus(state=state, consecutive_failures=st.consecutive_failures,
                         probes_in_flight=st.probes_in_flight,
                         half_open_successes=st.half_open_successes,
                         window_calls=st.window_calls, window_failures=st.window_failures,
                         retry_after_ns=st.retry_after_ns)


def _raise_with(rc: int, **attrs: Any) -> None:
    err = _lib.error(rc)
    for k, v in attrs.items():
        setattr(err, k, v)
    raise err


# ---------------------------------------------------------------------------------------------

class Arena:
    """An arena of throttled, opened by its name ([arena] name) or, with a '/', its path.

    ``limiters()`` lists the limiters opened through this Arena object only: the C API has no
    directory of an arena's limiters (shmctl reads the arena's internals for that, which a
    binding of the public API must not). ``throttle.http.Client.limiters()`` lists them all.
    """

    def __init__(self, name_or_path: Union[str, "os.PathLike[str]"]) -> None:
        raw = _name(os.fspath(name_or_path), "arena name")
        handle = c_void_p()
        _lib.check(_lib.lib.thr_arena_open(raw, 0, byref(handle)))
        self._h: Optional[int] = handle.value
        self.name = os.fspath(name_or_path)
        self._lock = threading.Lock()
        self._limiters: Dict[str, Limiter] = {}
        self._groups: List[Group] = []
        self._manual: Optional[bool] = None
        self._inflight = 0  # library calls running on it (see _in_arena)
        self._deferred: Optional[Tuple[int, List["Limiter"], List["Group"]]] = None
        _arenas.add(self)

    def _enter(self) -> None:
        with self._lock:
            if self._h is None:
                raise InvalidArgument(errno.EINVAL, "arena %s is closed" % self.name)
            self._inflight += 1

    def _leave(self) -> None:
        with self._lock:
            self._inflight -= 1
            work, self._deferred = ((self._deferred, None) if self._inflight == 0
                                    else (None, self._deferred))
        if work is not None:
            self._free(*work)

    @staticmethod
    def _free(h: int, lims: List["Limiter"], groups: List["Group"]) -> None:
        for lim in lims:
            lim._close()
        for g in groups:
            g._close()
        _lib.lib.thr_arena_close(h)

    # -- life ----------------------------------------------------------------------------------
    def _handle(self) -> int:
        h = self._h
        if h is None:
            raise InvalidArgument(errno.EINVAL, "arena %s is closed" % self.name)
        return h

    def close(self) -> None:
        """Close every limiter and group opened through it, then unmap the arena. Idempotent.
        No other thread may be using the arena or its limiters."""
        with self._lock:
            h, self._h = self._h, None
            lims, self._limiters = list(self._limiters.values()), {}
            groups, self._groups = self._groups, []
            if h is not None and self._inflight:
                # calls still running (another thread, or an abandoned asyncio wait): new calls
                # are refused now; the last running one unmaps when it returns
                self._deferred = (h, lims, groups)
                return
        if h is None:
            return
        self._free(h, lims, groups)

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<throttle.Arena %r%s>" % (self.name, "" if self._h else " closed")

    # -- limiters ------------------------------------------------------------------------------
    def limiter(self, name: str) -> "Limiter":
        """The limiter NAME (one Limiter object per name and Arena). NotFound if there is none."""
        raw = _name(name, "limiter name")
        with self._lock:
            lim = self._limiters.get(name)
            if lim is not None:
                return lim
            handle = c_void_p()
            _lib.check(_lib.lib.thr_limiter_open(self._handle(), raw, byref(handle)))
            lim = Limiter(self, name, handle.value)
            self._limiters[name] = lim
            return lim

    def limiters(self) -> List[LimiterInfo]:
        """LimiterInfo of each limiter opened through this Arena so far (see the class doc)."""
        with self._lock:
            lims = list(self._limiters.values())
        return [lim.info for lim in lims]

    def group(self, name: str) -> "Group":
        """The named group NAME of the daemon's config (a `compose = ...` section)."""
        raw = _name(name, "group name")
        handle = c_void_p()
        with self._lock:
            _lib.check(_lib.lib.thr_group_open(self._handle(), raw, byref(handle)))
            g = Group(self, name, handle.value)
            self._groups.append(g)
        return g

    # -- composed calls ------------------------------------------------------------------------
    @_in_arena(_self)
    def compose_try(self, members: Sequence[Tuple["Limiter", Key, int]]) -> ComposeResult:
        """Decide every (limiter, key, cost) now, all or nothing (thr_compose_try)."""
        arr, keep = _members(members)
        res = _lib.ComposeResultT()
        rc = _lib.lib.thr_compose_try(arr, len(members), byref(res))
        _lib.check(rc)
        del keep
        return _compose(res, len(members), rc)

    @_in_arena(_self)
    def compose_acquire(self, members: Sequence[Tuple["Limiter", Key, int]],
                        timeout: Optional[float] = None) -> ComposeResult:
        """Wait (up to TIMEOUT seconds; None: no bound) until every member fits, then consume
        them all. Raises Timeout (nothing consumed)."""
        arr, keep = _members(members)
        res = _lib.ComposeResultT()
        rc = _lib.lib.thr_compose_acquire(arr, len(members), _ns(timeout, "timeout"), byref(res),
                                          None)
        _lib.check(rc)
        del keep
        return _compose(res, len(members), rc)

    async def compose_acquire_async(self, members: Sequence[Tuple["Limiter", Key, int]],
                                    timeout: Optional[float] = None) -> ComposeResult:
        from . import aio
        return await aio.run_blocking(self.compose_acquire, members, timeout)

    # -- clock ---------------------------------------------------------------------------------
    @_in_arena(_self)
    def now_ns(self) -> int:
        """The arena's time in ns (CLOCK_MONOTONIC, or the manual clock's value)."""
        now = c_uint64()
        _lib.check(_lib.lib.thr_clock_now(self._handle(), byref(now)))
        return now.value

    @_in_arena(_self)
    def advance_clock(self, seconds: Optional[float] = None, *, ns: Optional[int] = None) -> int:
        """Move a manual-clock arena's time forward by SECONDS (a number) or by NS (an int,
        keyword only); exactly one of them. Returns the new time in ns. NotPermitted (EPERM) on
        a real-clock arena."""
        if (seconds is None) == (ns is None):
            raise InvalidArgument(errno.EINVAL, "advance_clock takes seconds or ns=, one of them")
        delta = _uint(ns, "ns") if ns is not None else _ns(seconds, "seconds")
        if delta == _lib.UINT64_MAX:
            raise InvalidArgument(errno.EINVAL, "advance_clock needs a finite time")
        _lib.check(_lib.lib.thr_clock_advance(self._handle(), delta))
        return self.now_ns()

    @property
    @_in_arena(_self)
    def manual_clock(self) -> bool:
        """True for a manual-clock arena (thr_clock_advance of 0 is allowed only there)."""
        if self._manual is None:
            rc = _lib.lib.thr_clock_advance(self._handle(), 0)
            if rc < 0 and rc != -errno.EPERM:
                _lib.fail(rc)
            self._manual = rc == 0
        return self._manual


def _members(members: Sequence[Tuple["Limiter", Key, int]]) -> Tuple[Any, List[bytes]]:
    n = len(members)
    if not 1 <= n <= _lib.COMPOSE_MAX_MEMBERS:
        raise InvalidArgument(errno.EINVAL, "a composed call takes 1 to %d members, not %d" %
                              (_lib.COMPOSE_MAX_MEMBERS, n))
    arr = (_lib.MemberT * n)()
    keep: List[bytes] = []
    for i, m in enumerate(members):
        try:
            lim, key, cost = m
        except (TypeError, ValueError):
            raise InvalidArgument(errno.EINVAL, "member %d must be (limiter, key, cost)" % i)
        if not isinstance(lim, Limiter):
            raise InvalidArgument(errno.EINVAL, "member %d: %r is not a Limiter" % (i, lim))
        raw = _key(key)
        keep.append(raw)
        arr[i].lim = lim._handle()
        arr[i].key = cast(c_char_p(raw), c_void_p)
        arr[i].len = len(raw)
        arr[i].cost = _uint(cost, "member %d cost" % i)
    return arr, keep


# ---------------------------------------------------------------------------------------------

class Limiter:
    """A named limiter of an Arena (Arena.limiter(name))."""

    def __init__(self, arena: Arena, name: str, handle: Optional[int]) -> None:
        self.arena = arena
        self.name = name
        self._h = handle

    def _handle(self) -> int:
        h = self._h
        if h is None:
            raise InvalidArgument(errno.EINVAL, "limiter %s is closed" % self.name)
        return h

    def _close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            _lib.lib.thr_limiter_close(h)

    def __repr__(self) -> str:
        return "<throttle.Limiter %r>" % self.name

    @property
    @_in_arena(_owner)
    def info(self) -> LimiterInfo:
        """Its kind and configuration now (a reload may change them)."""
        i = _lib.LimiterInfoT()
        _lib.check(_lib.lib.thr_limiter_info(self._handle(), byref(i)))
        return LimiterInfo(name=self.name, kind=_lib.KIND_NAMES.get(i.kind, "kind%d" % i.kind),
                           serialized=bool(i.flags & _lib.LIMITER_SERIALIZED), rate=i.rate,
                           period_ns=i.period_ns, burst=i.burst, initial=i.initial,
                           leases=i.leases, level=i.level)

    # -- rate kinds (gcra, window; a budget's try) ---------------------------------------------
    @_in_arena(_owner)
    def try_acquire(self, key: Key, cost: int = 1) -> Decision:
        """Decide now; a denial is a Decision with admitted False. Cost 0 peeks."""
        raw = _key(key)
        res = _lib.Result()
        rc = _lib.lib.thr_limiter_try(self._handle(), raw, len(raw), _uint(cost, "cost"),
                                      byref(res))
        _lib.check(rc)
        return _decision(res, rc == 1)

    @_in_arena(_owner)
    def acquire(self, key: Key, cost: int = 1, timeout: Optional[float] = None) -> Decision:
        """Admit COST for KEY, sleeping (this thread only) until due. Raises Timeout at once,
        consuming nothing, when it would wait longer than TIMEOUT seconds or max_reserve."""
        raw = _key(key)
        res = _lib.Result()
        _lib.check(_lib.lib.thr_limiter_acquire(self._handle(), raw, len(raw),
                                                _uint(cost, "cost"), _ns(timeout, "timeout"),
                                                byref(res)))
        return _decision(res, True)

    @_in_arena(_owner)
    def reserve(self, key: Key, cost: int = 1,
                max_wait: Optional[float] = None) -> "Reservation":
        """Take a place for COST, due within MAX_WAIT seconds (None: max_reserve bounds it),
        without sleeping. WouldBlock (with .wait_ns) when it would be due later."""
        raw = _key(key)
        rv = _lib.ReservationT()
        rc = _lib.lib.thr_limiter_reserve(self._handle(), raw, len(raw), _uint(cost, "cost"),
                                          _ns(max_wait, "max_wait"), byref(rv))
        if rc == -errno.EAGAIN:
            _raise_with(rc, wait_ns=rv.wait_ns)
        _lib.check(rc)
        return Reservation(self, rv)

    async def acquire_async(self, key: Key, cost: int = 1,
                            timeout: Optional[float] = None) -> Decision:
        from . import aio
        return await aio.acquire_async(self, key, cost, timeout)

    @_in_arena(_owner)
    def overload(self, count: int = 1) -> None:
        """COUNT calls the downstream refused for overload (thr_limiter_overload): an adaptive
        limiter (adaptive = aimd) is cut after an interval with any."""
        _lib.check(_lib.lib.thr_limiter_overload(self._handle(), _uint(count, "count")))

    # -- a downstream's word (gcra) ------------------------------------------------------------
    @_in_arena(_owner)
    def hold(self, key: Key, delay: float) -> Held:
        """Nothing admitted on KEY for DELAY seconds, in every process; then one, then the
        configured rate (thr_limiter_hold). Never gives capacity back."""
        raw = _key(key)
        res = _lib.Result()
        rc = _lib.check(_lib.lib.thr_limiter_hold(self._handle(), raw, len(raw),
                                                  _ns(delay, "delay"), byref(res)))
        return _held(res, rc)

    @_in_arena(_owner)
    def cap(self, key: Key, tokens: int) -> Held:
        """At most TOKENS left on KEY now, in every process (thr_limiter_cap)."""
        raw = _key(key)
        res = _lib.Result()
        rc = _lib.check(_lib.lib.thr_limiter_cap(self._handle(), raw, len(raw),
                                                 _uint(tokens, "tokens"), byref(res)))
        return _held(res, rc)

    @_in_arena(_owner)
    def apply_feedback(self, key: Key, headers: Any, tokens: bool = False) -> Held:
        """Apply a response's HEADERS (a mapping or (name, value) pairs) to KEY: Retry-After
        and a window with nothing remaining hold it, a count remaining caps it (thr_feedback_
        apply; the tokens dimension if TOKENS). A malformed value raises InvalidArgument naming
        the header, and nothing is applied."""
        fb = _lib.FeedbackT()
        _lib.lib.thr_feedback_init(byref(fb))
        for name, value in _header_pairs(headers):
            n, v = name.encode("latin-1", "replace"), value.encode("latin-1", "replace")
            rc = _lib.lib.thr_feedback_header(byref(fb), n, len(n), v, len(v), 0)
            if rc < 0:
                raise _lib.error(rc).__class__(-rc, "header %r: %s: %r" % (
                    name, "a number too large" if rc == -errno.ERANGE else
                    "more than 16 list members" if rc == -errno.E2BIG else
                    "not a value this header takes", value))
        raw = _key(key)
        res = _lib.Result()
        rc = _lib.check(_lib.lib.thr_feedback_apply(
            self._handle(), raw, len(raw), byref(fb),
            _lib.FEEDBACK_USE_TOKENS if tokens else 0, byref(res)))
        return _held(res, rc)

    # -- semaphore -----------------------------------------------------------------------------
    @_in_arena(_owner)
    def lease(self, key: Key, amount: int = 1, ttl: float = 60.0,
              timeout: Optional[float] = None, priority: int = 0) -> "Lease":
        """Take AMOUNT units of KEY for TTL seconds, waiting up to TIMEOUT (None: no bound; 0:
        try, WouldBlock if they do not fit now), queued in class PRIORITY (0, the lowest, to 7:
        higher classes are served first; thr_sem_acquire_opts(3)). A full bounded queue raises
        Busy (refused) or Dropped (dropped for another while queued). Usable as
        `with limiter.lease(...) as l:`."""
        raw = _key(key)
        lease = _lib.LeaseT()
        ttl_ns = _ns(ttl, "ttl")
        w = _lib.WaitOptsT()
        w.priority = _uint(priority, "priority", 7)
        w.timeout_ns = _ns(timeout, "timeout")
        _lib.check(_lib.lib.thr_sem_acquire_opts(self._handle(), raw, len(raw),
                                                 _uint(amount, "amount", 0xFFFFFFFF), ttl_ns,
                                                 byref(w), byref(lease)))
        return Lease(self, key, lease, ttl_ns)

    def lease_async(self, key: Key, amount: int = 1, ttl: float = 60.0,
                    timeout: Optional[float] = None) -> Any:
        """`async with limiter.lease_async(...) as lease:` (throttle.aio.AsyncLease)."""
        from . import aio
        return aio.AsyncLease(self, key, amount, ttl, timeout)

    @_in_arena(_owner)
    def sem_stat(self, key: Key) -> SemStat:
        raw = _key(key)
        st = _lib.SemStatT()
        _lib.check(_lib.lib.thr_sem_stat(self._handle(), raw, len(raw), byref(st)))
        return SemStat(max=st.max, held=st.held, remainder=st.remainder, leases=st.leases,
                       pending=st.pending, pending_units=st.pending_units,
                       longest_pending_ns=st.longest_pending_ns, level=st.level)

    # -- budget --------------------------------------------------------------------------------
    @_in_arena(_owner)
    def spend(self, key: Key, cost: int, timeout: Optional[float] = 0,
              priority: int = 0) -> BudgetResult:
        """Spend COST of KEY's balance, waiting up to TIMEOUT seconds for adds (0: try now;
        None: no bound), queued in class PRIORITY (0-7, higher first: thr_budget_spend_opts(3)).
        A short budget raises WouldBlock (a try) or Timeout, each with .result (a BudgetResult:
        the shortfall); nothing is spent then."""
        raw = _key(key)
        res = _lib.BudgetResultT()
        w = _lib.WaitOptsT()
        w.priority = _uint(priority, "priority", 7)
        w.timeout_ns = _ns(timeout, "timeout")
        rc = _lib.lib.thr_budget_spend_opts(self._handle(), raw, len(raw), _uint(cost, "cost"),
                                            byref(w), byref(res))
        if rc in (-errno.EAGAIN, -errno.ETIMEDOUT):
            _raise_with(rc, result=_budget(res))
        _lib.check(rc)
        return _budget(res)

    async def spend_async(self, key: Key, cost: int,
                          timeout: Optional[float] = 0) -> BudgetResult:
        from . import aio
        return await aio.spend_async(self, key, cost, timeout)

    @_in_arena(_owner)
    def add(self, key: Key, amount: int) -> BudgetResult:
        raw = _key(key)
        res = _lib.BudgetResultT()
        _lib.check(_lib.lib.thr_budget_add(self._handle(), raw, len(raw),
                                           _uint(amount, "amount"), byref(res)))
        return _budget(res)

    @_in_arena(_owner)
    def budget_stat(self, key: Key) -> BudgetStat:
        raw = _key(key)
        st = _lib.BudgetStatT()
        _lib.check(_lib.lib.thr_budget_stat(self._handle(), raw, len(raw), byref(st)))
        return BudgetStat(balance=st.balance, initial=st.initial, waiters=st.waiters,
                          need=st.need, head_need=st.head_need,
                          longest_pending_ns=st.longest_pending_ns, granted=st.granted)

    # -- circuit breaker -----------------------------------------------------------------------
    @_in_arena(_owner)
    def breaker_allow(self, key: Key) -> BreakerTicket:
        """May a call to KEY's downstream go ahead (thr_breaker_allow)? A BreakerTicket to report
        the outcome with (throttle.breaker), or WouldBlock with .status (a BreakerStatus) and
        .retry_after_ns when the breaker refuses (open, or half-open with every probe out)."""
        raw = _key(key)
        t = _lib.BreakerTicketT()
        st = _lib.BreakerStatusT()
        rc = _lib.lib.thr_breaker_allow(self._handle(), raw, len(raw), byref(t), byref(st))
        if rc == -errno.EAGAIN:
            _raise_with(rc, status=_breaker_status(st), retry_after_ns=st.retry_after_ns)
        _lib.check(rc)
        return BreakerTicket(self, key, bool(t.probe), bool(t.flags & _lib.BREAKER_UNTRACKED),
                             _breaker_status(st), t)

    def breaker(self, key: Key) -> BreakerTicket:
        """breaker_allow, for ``with lim.breaker(key) as call:`` (failure reported on an
        exception, success otherwise; see throttle.breaker)."""
        return self.breaker_allow(key)

    @_in_arena(_owner)
    def breaker_report(self, ticket: BreakerTicket, outcome: str) -> bool:
        """Report the OUTCOME ("success", "failure", "ignore") of TICKET's call, once
        (thr_breaker_report). True: counted; False: ignored (the breaker moved on since)."""
        if not isinstance(ticket, BreakerTicket):
            raise InvalidArgument(errno.EINVAL, "ticket: expected a BreakerTicket, not %s"
                                  % type(ticket).__name__)

        def call(t: _lib.BreakerTicketT, outcome: str) -> bool:
            rc = _lib.lib.thr_breaker_report(self._handle(), byref(t), _lib.OUTCOMES[outcome])
            return _lib.check(rc) == 0

        return ticket._spend(self, outcome, call)

    @_in_arena(_owner)
    def breaker_stat(self, key: Key) -> BreakerStatus:
        """KEY's breaker state now (thr_breaker_stat; a key not there is closed, not created)."""
        raw = _key(key)
        st = _lib.BreakerStatusT()
        _lib.check(_lib.lib.thr_breaker_stat(self._handle(), raw, len(raw), byref(st)))
        return _breaker_status(st)


# ---------------------------------------------------------------------------------------------

class Reservation:
    """A place taken by Limiter.reserve: due at arena time due_ns, wait_ns after it was taken."""

    def __init__(self, limiter: Limiter, rv: _lib.ReservationT) -> None:
        self.limiter = limiter
        self._rv = rv
        self.due_ns: int = rv.due_ns
        self.wait_ns: int = rv.wait_ns
        self.cost: int = rv.cost

    @property
    def wait(self) -> float:
        return self.wait_ns / NS

    @_in_arena(_owner2)
    def cancel(self) -> bool:
        """Give the place back if it is not yet due and nothing was stacked on it: True given
        back, False kept (unused). InvalidArgument once given back, or in a fork child."""
        return _lib.check(_lib.lib.thr_reservation_cancel(byref(self._rv))) == 1

    def __repr__(self) -> str:
        return "<throttle.Reservation due_ns=%d wait_ns=%d cost=%d>" % (self.due_ns, self.wait_ns,
                                                                       self.cost)


class Lease:
    """AMOUNT units of a semaphore key, held until release() or expiry (expires_ns, arena time).

    release() is idempotent in the process that took the lease. It belongs to that process: a
    fork child's release() or heartbeat() raises NotPermitted and leaves it held."""

    def __init__(self, limiter: Limiter, key: Key, lease: _lib.LeaseT, ttl_ns: int) -> None:
        self.limiter = limiter
        self.key = key
        self._lease = lease
        self._ttl_ns = ttl_ns
        self._released = False
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self.amount: int = lease.amount
        self.waited_ns: int = lease.waited_ns

    @property
    def expires_ns(self) -> int:
        return int(self._lease.expires_ns)

    @property
    def released(self) -> bool:
        return self._released

    @_in_arena(_owner2)
    def heartbeat(self, ttl: Optional[float] = None) -> int:
        """Keep it alive for TTL seconds from now (None: the ttl it was taken with). Returns the
        new expires_ns. Expired if it had expired and was reclaimed."""
        ttl_ns = self._ttl_ns if ttl is None else _ns(ttl, "ttl")
        _lib.check(_lib.lib.thr_sem_heartbeat(byref(self._lease), ttl_ns))
        return int(self._lease.expires_ns)

    @_in_arena(_owner2)
    def release(self) -> None:
        """Give it back (a second call does nothing). Expired if it had expired and been
        reclaimed (nothing held then either); NotPermitted in a fork child."""
        if os.getpid() != self._pid:
            # a fork child's copy: the library refuses it (-EPERM). Not under _mutex, which a
            # thread of the parent may have held at the fork and nobody in the child releases.
            _lib.check(_lib.lib.thr_sem_release(byref(self._lease)))
            self._released = True
            return
        with self._mutex:
            if self._released:
                return
            rc = _lib.lib.thr_sem_release(byref(self._lease))
            if rc == -errno.EPERM:
                _lib.fail(rc)  # another process's lease: it stays held, by its owner
            self._released = True
            _lib.check(rc)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], *rest: Any) -> None:
        try:
            self.release()
        except ThrottleError:
            if exc_type is None:  # never hide the block's own exception behind ours
                raise

    def __repr__(self) -> str:
        return "<throttle.Lease %s %r amount=%d expires_ns=%d%s>" % (
            self.limiter.name, self.key, self.amount, self.expires_ns,
            " released" if self._released else "")


# ---------------------------------------------------------------------------------------------

class Group:
    """A named group of the daemon's config: its members decided together (thr_group_*)."""

    def __init__(self, arena: Arena, name: str, handle: Optional[int]) -> None:
        self.arena = arena
        self.name = name
        self._h = handle
        self.size: int = _lib.check(_lib.lib.thr_group_size(handle))

    def _handle(self) -> int:
        h = self._h
        if h is None:
            raise InvalidArgument(errno.EINVAL, "group %s is closed" % self.name)
        return h

    def _close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            _lib.lib.thr_group_close(h)

    def _args(self, args: Sequence[Tuple[Optional[Key], int]]) -> Tuple[Any, List[bytes]]:
        if len(args) != self.size:
            raise InvalidArgument(errno.EINVAL, "group %s has %d members: %d args given" %
                                  (self.name, self.size, len(args)))
        arr = (_lib.GroupArgT * self.size)()
        keep: List[bytes] = []
        for i, a in enumerate(args):
            try:
                key, cost = a
            except (TypeError, ValueError):
                raise InvalidArgument(errno.EINVAL, "arg %d must be (key, cost)" % i)
            if key is not None:  # None: the first member's key
                raw = _key(key)
                keep.append(raw)
                arr[i].key = cast(c_char_p(raw), c_void_p)
                arr[i].len = len(raw)
            arr[i].cost = _uint(cost, "arg %d cost" % i)
        return arr, keep

    @_in_arena(_owner)
    def try_acquire(self, args: Sequence[Tuple[Optional[Key], int]]) -> ComposeResult:
        """ARGS[i] = (key, cost) for member i (key None: the first member's key)."""
        arr, keep = self._args(args)
        res = _lib.ComposeResultT()
        rc = _lib.check(_lib.lib.thr_group_try(self._handle(), arr, byref(res)))
        del keep
        return _compose(res, self.size, rc)

    @_in_arena(_owner)
    def acquire(self, args: Sequence[Tuple[Optional[Key], int]],
                timeout: Optional[float] = None) -> ComposeResult:
        arr, keep = self._args(args)
        res = _lib.ComposeResultT()
        rc = _lib.check(_lib.lib.thr_group_acquire(self._handle(), arr, _ns(timeout, "timeout"),
                                                   byref(res), None))
        del keep
        return _compose(res, self.size, rc)

    async def acquire_async(self, args: Sequence[Tuple[Optional[Key], int]],
                            timeout: Optional[float] = None) -> ComposeResult:
        from . import aio
        return await aio.run_blocking(self.acquire, args, timeout)


def lock(src: Any, limiter_name: str, key: Key, amount: int = 1, ttl: float = 60.0,
         timeout: Optional[float] = None) -> Any:
    """`with throttle.lock(src, "A", key):` holds a lease of the semaphore LIMITER_NAME for the
    block. SRC is an Arena or a throttle.http.Client: anything with .limiter(name).lease()."""
    return src.limiter(limiter_name).lease(key, amount=amount, ttl=ttl, timeout=timeout)
