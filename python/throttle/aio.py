"""asyncio forms of the calls that wait: none of them blocks the event loop.

- acquire_async: Limiter.reserve (max_wait = the timeout) takes the place at once without
  sleeping, then the task sleeps until the place is due. A task cancelled before that gives the
  reservation back (Reservation.cancel: given back if nothing was stacked on it since).
  On a manual-clock arena the due time is arena time that only advance_clock moves: the task
  polls the arena's clock every 5 ms instead of sleeping the wait.
- lease_async, spend_async, compose_acquire_async, Group.acquire_async: the blocking C call runs
  in a daemon thread of its own (ctypes releases the GIL; see run_blocking for why not the
  loop's default executor). A task cancelled while its
  call is still waiting in the thread cannot interrupt it: when that call later succeeds, what
  it took is given back (the lease released, the spend added back). A composed call's
  consumption cannot be given back this way and stays consumed.
"""
from __future__ import annotations

import asyncio
import errno
import threading
from typing import Any, Callable, Optional, TypeVar

from . import _lib
from .arena import NS, Key, Lease, Limiter
from .errors import ThrottleError
from .results import BudgetResult, Decision

T = TypeVar("T")
MANUAL_POLL = 0.005  # seconds between two looks at a manual clock


async def run_blocking(fn: Callable[..., T], *args: Any,
                       undo: Optional[Callable[[T], Any]] = None) -> T:
    """FN(*ARGS) in a thread of its own (not the loop's default executor). If the awaiting task
    is cancelled, UNDO is called with FN's result once FN returns (when it returns one).

    Why not the default executor: a cancelled task cannot interrupt a waiting C call, so its
    worker would stay blocked (a lease or spend with timeout None: for as long as the resource
    is short). A few such cancellations starve the executor (min(32, cpus + 4) workers: every
    other run_in_executor/to_thread of the loop waits), and asyncio.run() joins the executor's
    threads at exit, so it would never return. A daemon thread per waiting call has neither
    problem, and its late result is given back in that thread when nobody awaits it any more."""
    loop = asyncio.get_running_loop()
    fut: "asyncio.Future[T]" = loop.create_future()
    lock = threading.Lock()
    state = {"abandoned": False, "delivered": False}

    def _set(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def work() -> None:
        value: Any
        try:
            value = fn(*args)
            ok = True
        except BaseException as e:  # noqa: B902 - handed to the awaiting task
            ok, value = False, e
        with lock:
            give_back = state["abandoned"]
            if not give_back:
                try:
                    loop.call_soon_threadsafe(_set, ok, value)
                    state["delivered"] = True
                except RuntimeError:  # the loop is closed: nobody will take the result
                    give_back = True
        if give_back and ok and undo is not None:
            try:
                undo(value)
            except ThrottleError:
                pass

    threading.Thread(target=work, name="throttle-aio", daemon=True).start()
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with lock:
            state["abandoned"] = not state["delivered"]
            delivered = state["delivered"]
        if delivered and undo is not None:  # the result is on its way to FUT: undo it there
            give_back: Callable[[T], Any] = undo

            def _late(f: "asyncio.Future[T]") -> None:
                if not f.cancelled() and f.exception() is None:
                    try:
                        give_back(f.result())
                    except ThrottleError:
                        pass
            fut.add_done_callback(_late)
        raise


async def acquire_async(limiter: Limiter, key: Key, cost: int = 1,
                        timeout: Optional[float] = None) -> Decision:
    """Limiter.acquire without blocking the loop. Raises Timeout (nothing consumed) when the
    place would be due later than TIMEOUT seconds (or the limiter's max_reserve)."""
    try:
        rv = limiter.reserve(key, cost, max_wait=timeout)
    except ThrottleError as e:
        if e.errno != errno.EAGAIN:
            raise
        err = _lib.error(-errno.ETIMEDOUT)
        setattr(err, "wait_ns", getattr(e, "wait_ns", 0))
        raise err from None
    arena = limiter.arena
    try:
        while True:
            now = arena.now_ns()
            if now >= rv.due_ns:
                break
            await asyncio.sleep(MANUAL_POLL if arena.manual_clock else (rv.due_ns - now) / NS)
    except asyncio.CancelledError:
        try:
            rv.cancel()
        except ThrottleError:
            pass
        raise
    peek = limiter.try_acquire(key, 0)  # what is left now, changing nothing
    return Decision(admitted=True, limit=peek.limit, remaining=peek.remaining, retry_after_ns=0,
                    reset_after_ns=peek.reset_after_ns)


class AsyncLease:
    """Limiter.lease_async(...): `async with` it (the lease is released at the end of the
    block), or `await` it for a Lease to release yourself."""

    def __init__(self, limiter: Limiter, key: Key, amount: int, ttl: float,
                 timeout: Optional[float]) -> None:
        self._args = (key, amount, ttl, timeout)
        self._limiter = limiter
        self._lease: Optional[Lease] = None

    async def _acquire(self) -> Lease:
        return await run_blocking(self._limiter.lease, *self._args,
                                  undo=lambda lease: lease.release())

    def __await__(self) -> Any:
        return self._acquire().__await__()

    async def __aenter__(self) -> Lease:
        self._lease = await self._acquire()
        return self._lease

    async def __aexit__(self, exc_type: Any, *rest: Any) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            await run_blocking(lease.release)
        except ThrottleError:
            if exc_type is None:
                raise


async def spend_async(limiter: Limiter, key: Key, cost: int,
                      timeout: Optional[float] = 0) -> BudgetResult:
    """Limiter.spend in the executor; a cancelled task's late spend is added back."""
    return await run_blocking(limiter.spend, key, cost, timeout,
                              undo=lambda _res: limiter.add(key, cost))
